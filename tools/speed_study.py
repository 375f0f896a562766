"""Measure the settings of 32_speed: step times of the U-Net under each speed setting, then training runs that change one
setting at a time against the shipped recipes, each evaluated after every epoch (n = 1,000, the default sampler at <= 20
steps, the project classifier). Results go to nbs/speed_study.json, which the chapter reads; an arm already there is
skipped, so an interrupted study continues where it stopped (--redo NAME measures one again).

    OPENGEN_DATA=../shared/data python tools/speed_study.py            # everything (about 90 minutes on 2 cores)
    python tools/speed_study.py --only probes                             # the step-time table alone (minutes)
    python tools/speed_study.py --only fm_bf16,fm_fp32                    # some training arms

Run it on an otherwise idle machine: wall times are the point. Settings are chosen on training seed 1 (and sampling
seed 1); the fast recipes are then reported on seed 0 by `opengen bench --train`.
"""
import argparse, json, shutil, subprocess, sys, tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from opengen.speed import measure_recipe, step_probe  # noqa: E402

OUT = REPO / 'nbs' / 'speed_study.json'
SEED = 1          # the study's training and sampling seed; the fast recipes are reported on seed 0
EPOCHS = 4        # every training arm: the same budget in epochs; its wall time is what a setting costs

# the step-time table: one U-Net training step (forward, loss, backward, AdamW) of the class-conditional U-Net
PROBES = {
    'baseline (small, fp32, batch 128, 2 threads)': {},
    'torch threads 1': dict(threads=1),
    'inter-op threads 1': dict(interop=1),
    'channels-last': dict(channels_last=True),
    'torch.compile': dict(compile=True),
    'bf16 autocast': dict(precision='bf16'),
    'bf16 + channels-last': dict(precision='bf16', channels_last=True),
    'bf16 + torch.compile': dict(precision='bf16', compile=True),
    'batch 64, bf16': dict(bs=64, precision='bf16'),
    'batch 256, bf16': dict(bs=256, precision='bf16'),
    'preset tiny, bf16': dict(preset='tiny', precision='bf16'),
    'preset base, bf16': dict(preset='base', precision='bf16'),
    'small, patch 1, bf16': dict(unet={'patch': 1}, precision='bf16'),
}

# the training arms: (recipe, constructor changes, fit changes); the first of each family is its baseline, the shipped recipe
ARMS = {   # in the order they run: the ones the fast recipes' choice rests on first
    'fm_bf16':            ('fm_cond', {}, dict(precision='bf16')),
    'fm_fp32':            ('fm_cond', {}, {}),
    'ddpm_bf16':          ('ddpm_cond', {}, dict(precision='bf16')),
    'fm_bf16_ema0.995':   ('fm_cond', {}, dict(precision='bf16', ema=0.995)),
    'fm_bf16_bs256':      ('fm_cond', {}, dict(precision='bf16', bs=256, lr=4e-3)),
    'ddpm_fp32':          ('ddpm_cond', {}, {}),
    'fm_bf16_logitnormal': ('fm_cond', {}, dict(precision='bf16', t_dist='logit_normal')),
    'ddpm_bf16_v':        ('ddpm_cond', dict(prediction='v'), dict(precision='bf16')),
    'ddpm_bf16_minsnr5':  ('ddpm_cond', {}, dict(precision='bf16', min_snr_gamma=5.0)),
    'fm_bf16_tiny':       ('fm_cond', dict(unet={'widths': (16, 32), 'patch': 2, 'n_classes': 10}), dict(precision='bf16')),
    'ddpm_bf16_cosine':   ('ddpm_cond', dict(schedule='cosine'), dict(precision='bf16')),
}


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {'probes': {}, 'arms': {}, 'seed': SEED, 'epochs': EPOCHS}


def store(study: dict) -> None:
    tmp = OUT.with_suffix('.tmp'); tmp.write_text(json.dumps(study, indent=1) + '\n'); tmp.replace(OUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', default=None, help="comma-separated arm names, or 'probes'")
    ap.add_argument('--redo', default='', help='comma-separated arms (or probes) to measure again')
    ap.add_argument('--verify', type=int, default=0, metavar='K',
                    help='instead: K runs of `opengen bench --train fm_cond_fast` (seed 0), each a fresh process, kept under "verify"')
    a = ap.parse_args()
    if a.verify: return verify(a.verify)
    only = set(a.only.split(',')) if a.only else None
    redo = set(filter(None, a.redo.split(',')))
    study = load()
    if only is None or 'probes' in only:
        for name, s in PROBES.items():
            if name in study['probes'] and name not in redo and 'probes' not in redo: continue
            study['probes'][name] = step_probe(**s); store(study)
            print(f"probe {name:45s} {study['probes'][name]['ms/step']:7.1f} ms/step", flush=True)
    for name, (recipe, config, opts) in ARMS.items():
        if (only is not None and name not in only) or (name in study['arms'] and name not in redo): continue
        run = Path(tempfile.mkdtemp(prefix=f'speed_{name}_'))
        try:
            row = measure_recipe(recipe, run, epochs=EPOCHS, config=config, n=1000, sample_seed=SEED, show=False, **{'seed': SEED, **opts})
        finally: shutil.rmtree(run, ignore_errors=True)
        study['arms'][name] = row; store(study)
        print(f"arm {name:22s} {row['wall_time_s']:7.1f} s  accuracy {row['accuracy']:.3f}  FID {row['fid_clf']:.2f}  "
              f"t95 {row['t95_s']}  t99 {row['t99_s']}", flush=True)


def verify(k: int) -> None:
    "K fresh processes of `opengen bench --train` (the fast recipe on seed 0): their printouts here, their figures in the study."
    study = load(); study.setdefault('verify', [])
    for i in range(k):
        out = Path(tempfile.mkdtemp(prefix='speed_verify_')) / 'bench.json'
        args = [str(Path(sys.executable).parent / 'opengen'), 'bench', '--train', 'fm_cond_fast', '--json', str(out)]
        if study['verify']: args[2:2] = ['--models', 'fm_cond_mnist,ddpm_cond_mnist', '--presets', 'small']   # the full printout once
        print('$', ' '.join(args[1:]), flush=True)
        subprocess.run(args, check=True)
        study = load(); study.setdefault('verify', []).append(json.loads(out.read_text())['time_to_accuracy']); store(study)


if __name__ == '__main__':
    main()
