"""The desktop app under Qt's offscreen platform, with the shipped model and real photos."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QAccessible, QGuiApplication, QKeySequence  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from edgecap.app.keymap import ACTIONS  # noqa: E402
from edgecap.app.settings import AppSettings, load_settings, save_settings  # noqa: E402
from edgecap.app.window import NOTHING_YET, MainWindow  # noqa: E402
from edgecap.core.decoding import preset  # noqa: E402
from edgecap.core.image import read_image  # noqa: E402
from edgecap.narration.frames import FrameSourceError, MemorySource  # noqa: E402

from conftest import ASSETS, REPO  # noqa: E402

QUIET = AppSettings(camera=-1, voice="none", earcons=False)  # no engine: everything goes to the screen reader


def spoken(captioner, rgb, detail="brief"):
    """What edgecap says about a photo, decided outside the app (the app must say the same)."""
    from edgecap.app.workers import SharedCaptioner, spoken_description

    return spoken_description(SharedCaptioner(captioner), rgb, preset(detail)).caption


@pytest.fixture(scope="module")
def captioner():
    from edgecap.core.model import OnnxCaptioner

    return OnnxCaptioner.load(provider="cpu")


def no_camera():
    raise FrameSourceError("no camera in this test")


@pytest.fixture
def make_window(qtbot, captioner, tmp_path):
    def make(settings=QUIET, load_model=None, open_source=no_camera, **kwargs):
        window = MainWindow(settings, settings_path=tmp_path / "app.json",
                            load_model=load_model or (lambda: captioner), open_source=open_source, **kwargs)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        window.activateWindow()
        qtbot.waitActive(window)
        window.caption.setFocus()
        qtbot.wait(300)  # offscreen: a key sent at once after activation can be lost
        return window
    return make


def accessible(widget, what=QAccessible.Text.Name) -> str:
    return QAccessible.queryAccessibleInterface(widget).text(what)


def test_every_interactive_widget_has_a_name_and_the_focus_order_is_logical(make_window):
    window = make_window()
    interactive = [w for w in window.findChildren(QWidget)
                   if w.isVisible() and w.focusPolicy() != Qt.FocusPolicy.NoFocus]
    assert set(interactive) >= {window.caption, window.history, *window.buttons.values()}
    for widget in interactive + [window.preview, window.status, window.confidence]:
        assert accessible(widget).strip(), f"{widget.objectName() or widget} has no accessible name"
        assert accessible(widget, QAccessible.Text.Description).strip(), f"{widget.objectName()} has no description"
    assert accessible(window.buttons["describe"]) == "Describe now"
    assert "Key: space" in accessible(window.buttons["describe"], QAccessible.Text.Description)
    assert accessible(window.caption) == NOTHING_YET  # the sentence itself is what the reader says
    # Tab walks: description, the buttons in keymap order, then the history.
    order, widget = [], window.caption
    for _ in range(len(window.buttons) + 1):
        widget = widget.nextInFocusChain()
        while not (widget.isEnabled() and widget.isVisible() and widget.focusPolicy() & Qt.FocusPolicy.TabFocus):
            widget = widget.nextInFocusChain()
        order.append(widget.objectName())
    expected = [a.id for a in ACTIONS if a.button and window.buttons[a.id].isEnabled()] + ["history"]
    assert order[:len(expected)] == expected


def test_each_shortcut_triggers_its_action(make_window, qtbot, monkeypatch):
    # Dialogs would block the test; everything else runs for real.
    calls = []
    for name in ("on_open", "on_settings", "on_keys", "on_quit"):
        monkeypatch.setattr(MainWindow, name, lambda self, *_, n=name: calls.append(n))
    window = make_window()
    fired = []
    for spec in ACTIONS:
        window.actions[spec.id].triggered.connect(lambda *_, i=spec.id: fired.append(i))
    for spec in ACTIONS:
        for key in spec.keys:
            if spec.id == "read" and not window.actions["read"].isEnabled():
                continue
            fired.clear()
            QTest.keySequence(window.caption, QKeySequence(key))
            deadline = time.monotonic() + 2
            while not fired and time.monotonic() < deadline:
                qtbot.wait(20)
            assert fired == [spec.id], f"{key} fired {fired}, expected {spec.id}"
    assert calls == ["on_open", "on_settings", "on_keys", "on_quit"]
    # A few of the real effects: D once, + and = faster, - slower, N without a camera.
    assert window.settings.detail == "detailed" and window.speech.rate == 175 + 25
    QTest.keyClick(window.caption, Qt.Key.Key_N)
    qtbot.waitUntil(lambda: "Narration needs a camera" in " ".join(window.announced), timeout=5000)
    assert not window.actions["narrate"].isChecked()
    assert json.loads((window.settings_path).read_text())["rate"] == 200


def test_read_text_is_disabled_with_a_reason_until_text_reading_exists(make_window, qtbot):
    window = make_window()
    try:
        from edgecap.vision.reading import shared_reader  # noqa: F401
    except ImportError:
        assert not window.actions["read"].isEnabled()
        assert "not available" in accessible(window.buttons["read"], QAccessible.Text.Description)
        QTest.keyClick(window.caption, Qt.Key.Key_T)
        assert window.history.count() == 0
    else:
        assert window.actions["read"].isEnabled()


def test_t_reads_the_text_of_the_open_picture(make_window, qtbot):
    pytest.importorskip("edgecap.vision.reading")
    pytest.importorskip("rapidocr")
    import cv2
    import numpy as np

    sign = np.full((240, 640, 3), 255, np.uint8)  # a plain sign, black on white
    cv2.putText(sign, "EMERGENCY EXIT", (20, 140), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 5, cv2.LINE_AA)
    window = make_window()
    window.set_picture(sign, "sign")
    QTest.keyClick(window.caption, Qt.Key.Key_T)
    qtbot.waitUntil(lambda: window.history.count() == 1, timeout=60_000)
    assert "EMERGENCY EXIT" in window.caption.text().upper()
    assert "text in sign" in window.history.item(0).text()


def test_space_on_a_focused_button_presses_that_button(make_window, qtbot):
    window = make_window()
    window.buttons["repeat"].setFocus()
    QTest.keyClick(window.buttons["repeat"], Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: "Nothing described yet." in window.announced, timeout=2000)
    assert "No camera picture and no image" not in " ".join(window.announced)  # Space did not mean Describe


def test_opening_a_photo_puts_its_sentence_in_the_label_and_history(make_window, qtbot, captioner, tmp_path):
    window = make_window()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert window.open_paths([broken, ASSETS / "chelsea.jpg"]) == 1
    # The bad file is named aloud; the good one goes on.
    qtbot.waitUntil(lambda: any(a.startswith(f"{broken}: not") for a in window.announced), timeout=5000)
    qtbot.waitUntil(lambda: window.history.count() == 1, timeout=60_000)
    expected = spoken(captioner, read_image(ASSETS / "chelsea.jpg"))
    assert window.caption.text() == expected
    assert accessible(window.caption) == expected
    assert expected in window.history.item(0).text() and "chelsea.jpg" in window.history.item(0).text()
    qtbot.waitUntil(lambda: expected in window.announced, timeout=5000)  # spoken through the screen reader
    assert window.confidence.text().startswith("Confidence:")
    # Space describes the open image again; Ctrl+Shift+C copies the history with its time.
    QTest.keyClick(window.caption, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: window.history.count() == 2, timeout=60_000)
    QTest.keySequence(window.caption, QKeySequence("Ctrl+Shift+C"))
    assert QGuiApplication.clipboard().text().count(expected) == 2


def test_a_pasted_image_is_described(make_window, qtbot):
    window = make_window()
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(ASSETS / "rocket.jpg"))])
    QGuiApplication.clipboard().setMimeData(data)
    QTest.keySequence(window.caption, QKeySequence("Ctrl+V"))
    qtbot.waitUntil(lambda: window.history.count() == 1, timeout=60_000)
    assert "rocket.jpg" in window.history.item(0).text()
    QGuiApplication.clipboard().clear()  # the clipboard owns the data; left there it crashes Qt's exit


def test_a_fake_frame_source_drives_narration(make_window, qtbot, captioner):
    cat = read_image(ASSETS / "chelsea.jpg")
    window = make_window(open_source=lambda: MemorySource([cat] * 30, fps=10, name="test frames"))
    qtbot.waitUntil(lambda: bool(window.camera.running), timeout=5000)
    QTest.keyClick(window.caption, Qt.Key.Key_N)
    assert window.actions["narrate"].isChecked()
    qtbot.waitUntil(lambda: window.history.count() >= 1, timeout=60_000)
    expected = spoken(captioner, cat)
    assert window.caption.text() == expected and "(camera)" in window.history.item(0).text()
    assert window.preview.pixmap() is not None and not window.preview.pixmap().isNull()
    qtbot.waitUntil(lambda: "ended" in window.status.text(), timeout=30_000)  # 30 frames, then the end
    assert not window.actions["narrate"].isChecked()
    assert window.history.count() == 1  # one steady scene: said once
    assert "Narration on." in window.announced


def test_no_camera_is_said_and_retry_is_offered(make_window, qtbot):
    window = make_window()
    qtbot.waitUntil(lambda: "No camera" in window.status.text(), timeout=5000)
    assert window.buttons["retry"].isEnabled()
    assert any("No camera" in text for text in window.announced)
    QTest.keyClick(window.caption, Qt.Key.Key_Space)
    assert "Control O opens an image" in window.status.text()


def test_the_window_answers_within_100_ms_while_a_slow_caption_runs(make_window, qtbot, captioner):
    class Slow:
        """The real captioner, made slow: as a big model on a small board would be."""
        _describer = None  # its own grounded describer, not the fast captioner's

        def __getattr__(self, name):
            return getattr(captioner, name)

        def encode(self, images):
            time.sleep(1.5)
            return captioner.encode(images)

        def caption(self, images, options):
            time.sleep(1.5)
            return captioner.caption(images, options)

    window = make_window(load_model=Slow)
    window.describe_picture(read_image(ASSETS / "coffee.jpg"), "coffee.jpg")
    gaps, last = [], [time.monotonic()]

    def tick():
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now
    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    qtbot.waitUntil(lambda: window.history.count() == 1, timeout=60_000)
    timer.stop()
    assert len(gaps) > 50  # the probe ran through the whole caption (1.5 s asleep, then the real one)
    # A frozen window would show one gap as long as the caption (over 1.5 s). On this shared
    # 2-core machine the OS alone now and then delays a thread by more than 100 ms, so the
    # bar is: 98 % of ticks within 100 ms, and never a stall of half a second.
    slow = sorted(gaps)[int(0.98 * len(gaps))]
    print(f"GUI probe: {len(gaps)} ticks, median {sorted(gaps)[len(gaps) // 2] * 1000:.0f} ms, "
          f"98th percentile {slow * 1000:.0f} ms, worst {max(gaps) * 1000:.0f} ms")
    assert slow < 0.1 and max(gaps) < 0.5, f"98th percentile {slow * 1000:.0f} ms, worst {max(gaps) * 1000:.0f} ms"


def test_settings_are_saved_and_bad_ones_fall_back(tmp_path):
    path = tmp_path / "app.json"
    settings = AppSettings(speaker="screen_reader", rate=250, detail="detailed", high_contrast=False)
    save_settings(settings, path)
    assert load_settings(path) == (settings, None)
    path.write_text(json.dumps({"rate": "fast", "speaker": "robot", "detail": "detailed", "future_key": 1}))
    loaded, problem = load_settings(path)
    assert loaded == AppSettings(detail="detailed")
    assert "rate" in problem and "speaker" in problem
    path.write_text("{not json")
    assert load_settings(path)[0] == AppSettings() and "unreadable" in load_settings(path)[1]


def test_who_speaks_routes_to_the_screen_reader(make_window, qtbot):
    from edgecap.app.voice import RoutedVoice
    from edgecap.audio.voices import ProcessVoice, TextVoice

    assert not RoutedVoice(ProcessVoice("espeak"), "edgecap").through_reader
    assert RoutedVoice(ProcessVoice("espeak"), "screen_reader").through_reader
    assert RoutedVoice(TextVoice(), "edgecap").through_reader  # no engine: the reader is the only voice
    window = make_window(AppSettings(camera=-1, voice="none", speaker="screen_reader", earcons=False))
    QTest.keyClick(window.caption, Qt.Key.Key_D)
    qtbot.waitUntil(lambda: "Detailed descriptions." in window.announced, timeout=2000)


def test_app_command_without_pyside6_says_how_to_install():
    code = ("import sys; sys.modules['PySide6'] = None; from edgecap.cli import main; sys.exit(main(['app']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'edgecap: error: edgecap app needs PySide6: pip install "edgecap[app]" (or pip install PySide6-Essentials)']


def test_screenshot_command_renders_a_described_photo(tmp_path):
    out = tmp_path / "window.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "EDGECAP_APP_CONFIG": str(tmp_path / "app.json")}
    proc = subprocess.run([sys.executable, "-m", "edgecap", "app", "--screenshot", str(out), "--image",
                           str(ASSETS / "rocket.jpg")], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    from PySide6.QtGui import QImage

    image = QImage(str(out))
    assert image.width() >= 800 and image.height() >= 600


def test_the_readme_keyboard_map_is_the_apps():
    from edgecap.app.keymap import markdown_table

    assert markdown_table() in (REPO / "README.md").read_text(encoding="utf-8")


def test_closing_stops_camera_narration_and_speech(make_window, qtbot):
    from edgecap.narration.frames import Looping, Paced

    cat = read_image(ASSETS / "chelsea.jpg")
    window = make_window(open_source=lambda: Paced(Looping(lambda: MemorySource([cat] * 5, fps=10))))
    qtbot.waitUntil(lambda: bool(window.camera.running), timeout=5000)
    QTest.keyClick(window.caption, Qt.Key.Key_N)
    qtbot.waitUntil(lambda: window.camera.narrator is not None, timeout=30_000)
    window.close()
    assert not window.camera._thread.is_alive()
    assert not window.speech._thread.is_alive()


def test_a_missing_speech_engine_is_shown_and_announced(make_window, qtbot, monkeypatch):
    import edgecap.audio.voices as voices

    monkeypatch.setattr(voices, "espeak_binary", lambda: None)  # as on a machine without espeak-ng
    monkeypatch.setattr(voices, "pyttsx3_available", lambda: False)
    window = make_window(AppSettings(camera=-1, voice="auto", earcons=False))
    assert any(a.startswith("No speech engine found") for a in window.announced)
    window.show_sentence("Probably a cat on a sofa.", "hedged", "test")
    assert window.confidence.text() == "Confidence: not certain"


def test_a_dropped_photo_is_described(make_window, qtbot):
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    window = make_window()
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(ASSETS / "astronaut.jpg"))])
    # The offscreen platform has no drag and drop, so the window's handlers get the events directly.
    enter = QDragEnterEvent(QPoint(50, 50), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    enter.ignore()
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    window.dropEvent(QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                                Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: window.history.count() == 1, timeout=60_000)
    assert "astronaut.jpg" in window.history.item(0).text()


def test_the_settings_dialog_is_labelled_and_its_choices_are_applied_and_saved(make_window, qtbot):
    from edgecap.app.settings_dialog import SettingsDialog

    window = make_window()
    dialog = SettingsDialog(window.settings, window)
    fields = [w for w in dialog.findChildren(QWidget)  # qt_*: a spin box's own line edit and the like
              if w.focusPolicy() != Qt.FocusPolicy.NoFocus and not w.objectName().startswith("qt_")
              and w.isVisibleTo(dialog)]
    assert len(fields) >= 11
    for widget in fields:
        assert accessible(widget).strip(), f"{widget} has no accessible name"
    dialog.speaker.setCurrentIndex(dialog.speaker.findData("screen_reader"))
    dialog.font_size.setValue(40)
    dialog.high_contrast.setChecked(False)
    dialog.sensitivity.setCurrentIndex(dialog.sensitivity.findData("high"))
    new = dialog.result_settings()
    window.apply_settings(new)
    assert load_settings(window.settings_path) == (new, None)
    assert window.voice.through_reader and "font-size: 40pt" in window.styleSheet()
    assert new.scene_threshold == 0.22
    qtbot.waitUntil(lambda: "Settings saved." in window.announced, timeout=5000)
