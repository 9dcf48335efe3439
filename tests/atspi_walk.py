"""Walk the edgecap window's accessibility tree through AT-SPI, from outside the app, as
Orca does; press "Describe now" through the AT-SPI action interface and watch the
description change; then quit through the File menu's "Quit" item.

Runs under the system Python that has pyatspi (Debian: python3-pyatspi), not in the
app's environment:  /usr/bin/python3 tests/atspi_walk.py OUT.json
Prints nothing on success; writes what it saw to OUT.json.
"""
import json
import sys
import time

import pyatspi
from gi.repository import GLib

CAPTION_DESCRIPTION = "The latest description, as it was spoken."


def find_app(timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for app in pyatspi.Registry.getDesktop(0):
            if app is not None and app.name == "edgecap" and app.childCount:
                return app
        time.sleep(0.2)
    raise SystemExit("atspi_walk: no application named edgecap appeared on the AT-SPI bus")


def walk(acc, depth=0, out=None):
    out = [] if out is None else out
    states = acc.getState()
    out.append({"depth": depth, "role": acc.getRoleName(), "name": acc.name, "description": acc.description,
                "focusable": states.contains(pyatspi.STATE_FOCUSABLE),
                "enabled": states.contains(pyatspi.STATE_SENSITIVE)})
    for i in range(acc.childCount):
        child = acc.getChildAtIndex(i)
        if child is not None:
            walk(child, depth + 1, out)
    return out


def find(acc, test):
    if test(acc):
        return acc
    for i in range(acc.childCount):
        child = acc.getChildAtIndex(i)
        found = find(child, test) if child is not None else None
        if found is not None:
            return found
    return None


def text_of(acc):
    try:
        text = acc.queryText()
        return text.getText(0, text.characterCount)
    except NotImplementedError:
        return None


def press(acc):
    action = acc.queryAction()
    names = [action.getName(i) for i in range(action.nActions)]
    action.doAction(names.index("Press") if "Press" in names else 0)
    return names


def main(out_path, timeout=120.0):
    app = find_app(60)
    frame = app.getChildAtIndex(0)
    caption = find(frame, lambda a: a.description == CAPTION_DESCRIPTION)
    history = find(frame, lambda a: a.getRole() == pyatspi.ROLE_LIST and a.name == "History")
    report = {"tree": walk(app), "before": {"name": caption.name, "text": text_of(caption)}}
    describe = find(frame, lambda a: a.getRole() == pyatspi.ROLE_PUSH_BUTTON and a.name == "Describe now")
    # What the app hands to the screen reader to say (QAccessibleAnnouncementEvent -> AT-SPI
    # object:announcement), heard while Describe runs, as Orca would hear it.
    report["announcements"] = []
    pyatspi.Registry.registerEventListener(lambda event: report["announcements"].append(str(event.any_data)),
                                           "object:announcement")
    # Name changes as a screen reader is told of them (its cached names follow these events).
    report["name_changes"] = []
    pyatspi.Registry.registerEventListener(
        lambda event: report["name_changes"].append([event.source.getRoleName(), str(event.any_data)]),
        "object:property-change:accessible-name")
    deadline = time.monotonic() + timeout

    t0 = time.monotonic()

    def start():
        report["describe_actions"] = press(describe)
        report["pressed_after_s"] = round(time.monotonic() - t0, 2)
        return False

    def wait_for_change():
        changed = caption.name != report["before"]["name"]
        heard = changed and caption.name in report["announcements"]
        if heard or time.monotonic() > deadline or (changed and time.monotonic() > settle[0]):
            pyatspi.Registry.stop()
            return False
        if not changed:
            settle[0] = time.monotonic() + 5.0  # once changed, give the announcement 5 s to arrive
        return True

    settle = [0.0]
    GLib.timeout_add(50, start)
    GLib.timeout_add(200, wait_for_change)
    pyatspi.Registry.start()
    report["after"] = {"name": caption.name, "text": text_of(caption)}
    report["after_s"] = round(time.monotonic() - t0, 2)
    report["history"] = [history.getChildAtIndex(i).name for i in range(history.childCount)]
    quit_item = find(frame, lambda a: a.getRole() == pyatspi.ROLE_MENU_ITEM and a.name == "Quit")
    report["quit_actions"] = press(quit_item)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
