"""The explorers of `30_widgets` on the Fashion-MNIST models: the class menu names the garments, and choosing a class redraws it."""
import pytest
import torch
from opengen.checkpoints import available_pretrained, load_pretrained
from opengen.data import label_names
from opengen.widgets import class_names, cvae_explorer, guidance_explorer, z_explorer

FASHION = label_names('fashion')
EXPLORERS = {'cvae_fashion': lambda m: cvae_explorer(m), 'cgan_fashion': lambda m: z_explorer(m),
             'ddpm_cond_fashion': lambda m: guidance_explorer(m, grid=2, steps=2, step_options=(2,))}


def menu(ex):
    "The class dropdown of an explorer (described 'digit' or 'class')."
    return next(c for c in ex.controls if getattr(c, 'description', '') in ('digit', 'class'))


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
@pytest.mark.parametrize('name', [n for n in EXPLORERS if n in available_pretrained()])
def test_the_explorers_work_on_the_fashion_models(name):
    m = load_pretrained(name)
    ex = EXPLORERS[name](m)
    assert [label for label, _ in menu(ex).options] == list(FASHION), name      # 'Coat', not '4'
    before = ex.pane.widget.value
    menu(ex).value = 5                                                            # Sandal: a redraw with other images
    assert ex.pane.widget.value != before and len(ex.times) == 2, name
    assert ex.pane.widget.value[:8] == b'\x89PNG\r\n\x1a\n'


def test_class_names_fall_back_to_indices_and_respect_a_given_list():
    class Bare(torch.nn.Module): n_classes = 3
    assert class_names(Bare()) == ['0', '1', '2']
    bare = Bare(); bare.meta = {'data': 'fashion train'}                          # ten names do not fit three classes
    assert class_names(bare) == ['0', '1', '2'] and class_names(bare, ['a', 'b', 'c']) == ['a', 'b', 'c']
    assert class_names(load_pretrained('cgan_mnist')) == [str(i) for i in range(10)]
