"""The installed dependencies provide what the code calls (opencv-python-headless 5.0 dropped
parts of objdetect; pyproject.toml pins the range this is checked on)."""
import re
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
CV2_NAME = re.compile(r"\bcv2\.[A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_]")


def test_every_opencv_name_the_code_uses_exists():
    used = {name for folder in ("edgecap", "export", "bench", "tests") for path in (REPO / folder).rglob("*.py")
            for name in CV2_NAME.findall(path.read_text(encoding="utf-8"))}
    assert {"cv2.imdecode", "cv2.IMREAD_REDUCED_COLOR_8", "cv2.VideoCapture"} <= used  # the scan sees the code

    def missing(name: str) -> bool:
        obj = cv2
        for part in name.split(".")[1:]:
            if not hasattr(obj, part):
                return True
            obj = getattr(obj, part)
        return False

    assert sorted(filter(missing, used)) == [], f"opencv {cv2.__version__}"
