"""Looks: large text, and a high-contrast theme that does not rely on colour alone
(focus is a thick frame, a checked button is also bordered and says so by name)."""
from __future__ import annotations


def stylesheet(high_contrast: bool, font_size: int) -> str:
    base = max(12, round(font_size * 0.55))
    size = f"QWidget {{ font-size: {base}pt; }} QLabel#caption {{ font-size: {font_size}pt; font-weight: bold; }}"
    if not high_contrast:
        return size + (" QToolButton:focus, QListWidget:focus, QLabel#caption:focus"
                       " { border: 3px solid palette(highlight); }")
    return size + f"""
QWidget {{ background: #000000; color: #ffffff; }}
QLabel#caption {{ color: #ffff00; padding: 8px; }}
QLabel#caption:focus, QListWidget:focus {{ border: 3px solid #00ffff; }}
QToolButton {{ background: #000000; color: #ffffff; border: 2px solid #ffffff; padding: 6px; }}
QToolButton:focus {{ border: 4px solid #00ffff; }}
QToolButton:checked {{ background: #ffffff; color: #000000; }}
QToolButton:disabled {{ color: #9a9a9a; border: 2px dashed #9a9a9a; }}
QListWidget::item:selected {{ background: #ffffff; color: #000000; }}
QMenuBar::item:selected, QMenu::item:selected {{ background: #ffffff; color: #000000; }}
QStatusBar QLabel {{ color: #ffffff; font-size: {base}pt; }}
"""
