"""Classifier registry, torchvision and ``module:callable`` forms, and the ImageNet class list."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from rde import (
    Classifier,
    create_classifier,
    imagenet_class_index,
    imagenet_classes,
    list_classifiers,
    register_classifier,
)
from rde.classifiers import as_classifier
from rde.errors import InputError


@pytest.fixture(scope="module", params=list_classifiers())
def registered(request) -> Classifier:
    return create_classifier(request.param)


def test_registry_lists_the_embedded_and_test_classifiers():
    assert {"efficientnet_lite0", "tiny-test"} <= set(list_classifiers())


def test_registered_classifier_output_frozen_eval(registered):
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    logits = registered(x)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert registered.name in list_classifiers()
    assert all(not p.requires_grad for p in registered.parameters())
    assert not registered.training and not any(m.training for m in registered.modules())
    registered.train()  # stays in eval mode
    assert not any(m.training for m in registered.modules())
    logits.sum().backward()  # gradients reach the image (the optimizer needs them), not the weights
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in registered.parameters())
    with torch.no_grad():
        torch.testing.assert_close(registered(x[:1]), logits[:1].detach(), atol=1e-4, rtol=1e-4)
    assert registered.class_name(0) == "tench" and registered.class_name(5000) == "5000"


def test_unknown_name_lists_the_options():
    with pytest.raises(ValueError, match=r"unknown classifier 'efficientnet_lite9'.*efficientnet_lite0, tiny-test") as info:
        create_classifier("efficientnet_lite9")
    assert "Did you mean" in str(info.value)


def test_torchvision_weights_missing_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"'resnet18'.*never downloads") as info:
        create_classifier("resnet18")
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-") in str(info.value)
    assert not (tmp_path / "hub" / "checkpoints").exists() or not any((tmp_path / "hub" / "checkpoints").iterdir())


def test_torchvision_weights_from_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(model.state_dict(), cache / weights.url.rsplit("/", 1)[1])
    clf = create_classifier("mobilenet_v3_small")
    assert clf.name == "mobilenet_v3_small" and clf.class_names == list(weights.meta["categories"])
    assert all(not p.requires_grad for p in clf.parameters()) and not clf.training
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), model.eval()((x - mean) / std))


FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn
    from rde import Classifier

    def linear():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1000))

    def wrapped():
        return Classifier(linear(), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), name="wrapped", class_names=["a"] * 1000)

    def not_a_module():
        return 42

    def broken():
        raise RuntimeError("weights file missing")

    value = 3
    """
)


@pytest.fixture
def factories(tmp_path, monkeypatch) -> str:
    (tmp_path / "fcx_test_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fcx_test_factories"


def test_module_callable_returning_a_module(factories):
    clf = create_classifier(f"{factories}:linear")
    assert isinstance(clf, Classifier) and clf.name == f"{factories}:linear"
    assert all(not p.requires_grad for p in clf.parameters()) and not clf.training
    x = torch.rand(2, 3, 8, 8)
    torch.manual_seed(0)
    reference = nn.Linear(3 * 8 * 8, 1000)
    with torch.no_grad():  # no normalization: the module gets [0, 1] pixels as they are
        torch.testing.assert_close(clf(x), reference(x.flatten(1)))


def test_module_callable_returning_a_classifier_is_used_as_is(factories):
    clf = create_classifier(f"{factories}:wrapped")
    assert clf.name == "wrapped" and clf.class_name(3) == "a"
    torch.testing.assert_close(clf.mean.flatten(), torch.full((3,), 0.5))


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("fcx_no_such_module:make", ValueError, "cannot import module 'fcx_no_such_module'"),
        ("{m}:missing", ValueError, "has no callable 'missing'"),
        ("{m}:value", ValueError, "has no callable 'value'"),
        ("{m}:not_a_module", InputError, r"not_a_module\(\) returned int, expected an nn.Module"),
        ("{m}:broken", InputError, r"broken\(\) failed \(RuntimeError: weights file missing\)"),
    ],
)
def test_module_callable_errors(factories, spec, error, message):
    with pytest.raises(error, match=message):
        create_classifier(spec.format(m=factories))


def test_register_twice_is_refused():
    with pytest.raises(ValueError, match="'tiny-test' is already registered"):
        register_classifier("tiny-test")(lambda: None)


def test_as_classifier_forms(tiny_classifier):
    assert as_classifier(tiny_classifier) is tiny_classifier
    assert as_classifier("tiny-test").name == "tiny-test"
    wrapped = as_classifier(nn.Identity())
    assert isinstance(wrapped, Classifier) and wrapped.name == "Identity"
    with pytest.raises(TypeError, match="got list"):
        as_classifier([1, 2])


def test_imagenet_classes():
    classes = imagenet_classes()
    assert len(classes) == 1000 and all(len(row) == 2 for row in classes)
    wnids = [w for w, _ in classes]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in wnids)
    assert classes[0] == ("n01440764", "tench")
    assert imagenet_class_index("n01440764") == 0
    assert imagenet_class_index(classes[999][0]) == 999
    with pytest.raises(ValueError, match="'n00000000' is not an ImageNet-1k wnid"):
        imagenet_class_index("n00000000")


def test_imagenet_classes_match_the_shared_synset_list(shared_dir):
    path = shared_dir / "data" / "imagenet-synsets.tsv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    rows = [tuple(line.split("\t", 1)) for line in path.read_text().splitlines() if line.strip()]
    assert [w for w, _ in rows] == [w for w, _ in imagenet_classes()]
