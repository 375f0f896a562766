"""Add its `check` block to the card of a shipped weight written before cards had one (tensors untouched, header and
Markdown card rewritten): the figures of the first `CHECK_N` samples of the card's evaluation and of the first
`CHECK_TEST_N` test images of its test-set figures, measured by the same calls as the recipe's card (tests/shipped.py,
`fresh_check`), or, for an ablation arm, each evaluation row's check (`record_check`). The fast card test re-measures
these exactly. `python tools/card_checks.py --write` (every shipped weight) or `--write NAME ...`; without --write it
prints what it would write."""
import argparse, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))

from opengen.checkpoints import available_pretrained, load, read_safetensors, write_model_card, write_safetensors  # noqa: E402
from opengen.core import WEIGHTS_DIR  # noqa: E402
from opengen.diffusion.ablation import record_check  # noqa: E402
from shipped import fresh_check, sampler_of  # noqa: E402


def add_check(name: str, write: bool) -> dict:
    "The check block of shipped weight `name`, measured now; written into its header and card when `write`."
    path = WEIGHTS_DIR / f'{name}.safetensors'
    model = load(path)
    if 'evaluation' in model.meta:
        if write: record_check(path)
        return {arm: row.get('check') for arm, row in load(path).meta['evaluation'].items()}
    check = fresh_check(model, model.meta, sampler_of(model))
    if write:
        tensors, header = read_safetensors(path)
        header['meta']['check'] = check
        write_safetensors(path, tensors, header); write_model_card(path)
        assert load(path).state_dict().keys() == model.state_dict().keys()
    return check


if __name__ == '__main__':
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('names', nargs='*', help='shipped weights (default: all)')
    a.add_argument('--write', action='store_true', help='write the blocks into the headers and cards')
    args = a.parse_args()
    for name in args.names or available_pretrained():
        print(name, json.dumps(add_check(name, args.write)), flush=True)
