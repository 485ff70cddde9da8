"""One real end-to-end CartoonX run: the embedded EfficientNet-Lite0 on a tench photo from ../shared."""

from __future__ import annotations

import pytest
import torch

from rde import CartoonX, create_classifier, load_image, preprocess


@pytest.mark.slow
def test_efficientnet_lite0_on_tench(imagenet_sample):
    path = imagenet_sample / "n01440764_tench.JPEG"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    clf = create_classifier("efficientnet_lite0")
    image = load_image(path)
    with torch.no_grad():
        probs = clf(preprocess(image, 128)[None]).softmax(-1)[0]
    assert probs.argmax().item() == 0 and probs[0] > 0.9  # tench, at the cpu preset's 128 px

    # 80 px keeps the run to a few seconds (the DWT needs >= 32 px); L=8, 40 steps of the cpu preset
    ex = CartoonX(clf, preset="cpu", num_samples=8).explain(preprocess(image, 80)[None], steps=40)
    loss, distortion = ex.history["loss"][0], ex.history["distortion"][0]
    assert loss[:5].mean() - loss[-5:].mean() > 3.0
    assert distortion[-5:].mean() < 0.05  # the sparser mask still keeps the classifier's decision
    assert ex.mask.mean() < 0.85 and 0 <= ex.mask.min() and ex.mask.max() <= 1
    lowpass, finest = ex.masks_per_scale()[0], ex.masks_per_scale()[1]
    assert lowpass.std() > 0.05  # the distortion term shapes the mask, not only the uniform l1 pull
    assert finest.mean() < lowpass.mean() - 0.05  # fine detail is dropped before the coarse image
