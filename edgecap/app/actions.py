"""What each key does: one `on_<id>` method per entry of keymap.ACTIONS (MainWindow connects
them by name), plus applying and saving settings. Mixed into MainWindow."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QFileDialog, QMessageBox

from edgecap.app.keymap import help_text
from edgecap.app.settings import AppSettings, save_settings
from edgecap.app.workers import rgb_from_qimage

NO_PICTURE = "No camera picture and no image. Control O opens an image."


class ActionHandlers:
    def on_describe(self) -> None:
        picture = self._current_picture()
        if picture is None:
            self.set_status(NO_PICTURE, speak=True)
            return
        label, rgb = picture
        self._request("describe", rgb, label)

    def on_read(self) -> None:
        picture = self._current_picture()
        if picture is None:
            self.set_status(NO_PICTURE, speak=True)
            return
        self._request("read", picture[1], picture[0])

    def on_narrate(self, on: bool) -> None:
        if on and not self.camera.running:
            self.actions["narrate"].setChecked(False)
            self.set_status("Narration needs a camera, and none is on. F5 retries the camera.", speak=True)
            return
        if on == self.camera.narrating:
            return
        self.camera.set_narration(on)
        if on:
            self.set_status("Narration on: the view is described when it changes.")  # the narrator says so
        else:
            self.set_status("Narration off.", speak=True)

    def on_repeat(self) -> None:
        self.speech.repeat()

    def on_stop(self) -> None:
        self.speech.stop()
        if self.tones:
            self.tones.stop()
        self.set_status("Speech stopped.")

    def on_detail(self, detailed: bool) -> None:
        self._change(detail="detailed" if detailed else "brief")
        if self.camera.narrator is not None:
            self.camera.narrator.decoding = self.decoding()
        self.set_status(f"{self.settings.detail.capitalize()} descriptions.", speak=True)

    def on_faster(self) -> None:
        self._rate(self.speech.faster())

    def on_slower(self) -> None:
        self._rate(self.speech.slower())

    def _rate(self, rate: int) -> None:
        self._change(rate=rate)
        self.set_status(f"Speech rate {rate} words per minute.", speak=True)

    def on_open(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images", str(Path.home()),
                                                "Images (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff);;All files (*)")
        self.open_paths(paths)

    def on_paste(self) -> None:
        data = QGuiApplication.clipboard().mimeData()
        if data is not None and data.hasImage():
            image = QImage(data.imageData())
            if not image.isNull():
                self.describe_picture(rgb_from_qimage(image), "pasted image")
                return
        if data is not None and data.hasUrls():
            if self.open_paths([u.toLocalFile() for u in data.urls() if u.isLocalFile()]):
                return
        self.set_status("The clipboard holds no image.", speak=True)

    def on_copy(self) -> None:
        text = self.history_text(only_selected=True) or self.history_text()
        QGuiApplication.clipboard().setText(text)
        self.set_status(f"Copied {len(text.splitlines())} history entries.", speak=True)

    def on_retry(self) -> None:
        self.set_status("Opening the camera…")
        self.camera.start()

    def on_settings(self) -> None:
        from edgecap.app.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings())

    def on_keys(self) -> None:
        self.say(help_text().replace("\n", ". "))
        QMessageBox.information(self, "Keyboard shortcuts", help_text())

    def on_quit(self) -> None:
        self.close()

    def apply_settings(self, new: AppSettings) -> None:
        old, self.settings = self.settings, new
        self._save()
        self.apply_theme()
        self.actions["detail"].setChecked(new.detail == "detailed")
        if (old.voice, old.speaker) != (new.voice, new.speaker):
            self.speech.close()
            self._start_speech()
        self.speech.rate = new.rate
        if old.camera != new.camera:
            self.camera.close()
            self.camera.start()
        self.set_status("Settings saved." + (" The provider changes after a restart." if old.provider != new.provider
                                             or old.model != new.model else ""), speak=True)

    def _change(self, **changes) -> None:
        self.settings = self.settings.with_changes(**changes)
        self._save()

    def _save(self) -> None:
        try:
            save_settings(self.settings, self.settings_path)
        except OSError as exc:
            self.set_status(f"Settings not saved: {exc}")
