"""Helpers for the desktop tests: a private X server (Xvfb) and screenshots of it."""

import os
import subprocess

WIDTH, HEIGHT = 1280, 900


class Xvfb:
    """An X server on a free display number, for the life of a `with` block."""

    def __enter__(self):
        r, w = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"],
                                     pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            self.display = ":" + f.readline().strip()
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)

    def screenshot(self, png_path):
        """Saves the screen as PNG and returns it as (width, height, RGB bytes)."""
        env = dict(os.environ, DISPLAY=self.display)
        xwd = subprocess.run(["xwd", "-root", "-silent"], env=env, capture_output=True, check=True).stdout
        subprocess.run(["convert", "xwd:-", png_path], input=xwd, check=True)
        rgb = subprocess.run(["convert", "xwd:-", "-depth", "8", "rgb:-"], input=xwd, capture_output=True, check=True).stdout
        return WIDTH, HEIGHT, rgb


def share_of_color(shot, rgb, rows):
    """The share of pixels in the given rows that have exactly this colour."""
    width, _, data = shot
    hits = total = 0
    for y in rows:
        line = data[y * width * 3:(y + 1) * width * 3]
        for x in range(0, width * 3, 3):
            total += 1
            if line[x] == rgb[0] and line[x + 1] == rgb[1] and line[x + 2] == rgb[2]:
                hits += 1
    return hits / total
