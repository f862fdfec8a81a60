"""The desktop package: the .deb that `scripts/package` builds installs `understudy`,
`understudy-tray` and `understudy-dashboard` on the PATH with a desktop entry, depends only on what is installable, and
the tray app from it starts under Xvfb, serves, shows its dashboard and runs the local model
through the packaged worker. Installed into a scratch root (`dpkg-deb -x`), not the system."""

import glob
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


@pytest.fixture(scope="module")
def deb():
    found = sorted(glob.glob(os.path.join(ROOT, "target", "*", "bundle", "deb", "*.deb")), key=os.path.getmtime)
    if not found:
        raise RuntimeError("no .deb: scripts/test runs scripts/package --debug before this test")
    return found[-1]


@pytest.fixture(scope="module")
def scratch_root(deb, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    return str(root)


def test_the_package_puts_both_programs_on_the_path_with_a_desktop_entry(deb, scratch_root):
    # The dashboard window is its own program, started by the tray app from beside it.
    for name in ("understudy", "understudy-tray", "understudy-dashboard"):
        path = os.path.join(scratch_root, "usr", "bin", name)
        assert os.access(path, os.X_OK), path
    version = subprocess.run([os.path.join(scratch_root, "usr", "bin", "understudy"), "--version"],
                             capture_output=True, text=True, check=True).stdout
    assert version.startswith("understudy 0.1.0"), version
    entries = glob.glob(os.path.join(scratch_root, "usr", "share", "applications", "*.desktop"))
    assert len(entries) == 1
    entry = open(entries[0]).read()
    assert "Exec=understudy-tray" in entry and "Name=Understudy" in entry and "Icon=understudy-tray" in entry
    icon = os.path.join(scratch_root, "usr", "share", "icons", "hicolor", "128x128", "apps", "understudy-tray.png")
    assert os.path.exists(icon)
    # Every dependency it declares is a package this system has (so `apt install ./x.deb` works).
    depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True, check=True).stdout
    # The tray loads the indicator library at run time (dlopen), so nothing links it: the
    # package must name it, or the tray dies where it is not installed.
    assert "libayatana-appindicator3-1" in depends, depends
    for dep in [d.strip().split()[0] for d in depends.split(",") if d.strip()]:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", dep], capture_output=True, text=True).stdout
        assert "install ok installed" in status, f"{dep} is not installed"


def test_the_package_ships_every_cpu_variant_and_the_binary_finds_its_libraries(scratch_root):
    libdir = os.path.join(scratch_root, "usr", "lib", "understudy")
    names = set(os.listdir(libdir))
    # llama.cpp's core, and one CPU backend per instruction-set level (runtime dispatch).
    assert {"libllama.so.0", "libggml.so.0", "libggml-base.so.0"} <= names, names
    variants = {n for n in names if n.startswith("libggml-cpu-")}
    assert {"libggml-cpu-x64.so", "libggml-cpu-haswell.so", "libggml-cpu-sapphirerapids.so"} <= variants, variants
    # The binary's run path finds them in the package's own lib dir, not anywhere else.
    ldd = subprocess.run(["ldd", os.path.join(scratch_root, "usr", "bin", "understudy")],
                         capture_output=True, text=True, check=True).stdout
    for lib in ("libllama.so", "libggml.so", "libggml-base.so"):
        line = next(l for l in ldd.splitlines() if l.strip().startswith(lib))
        found = os.path.normpath(line.split("=>")[1].split("(")[0].strip())
        assert os.path.dirname(found) == os.path.normpath(libdir), line


def test_the_installed_tray_app_starts_serves_and_answers_from_the_local_model(scratch_root):
    out = subprocess.run(
        ["dbus-run-session", "--", sys.executable, os.path.join(HERE, "package_scenario.py"), scratch_root],
        capture_output=True, text=True, timeout=400,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert ("local", "local") in [tuple(p) for p in r["providers"]], r
    # The packaged worker chose its CPU kernels at start: the best this CPU runs (or one
    # down after a SIGILL), and that library is the one it mapped.
    cpu = r["local_cpu"]
    assert cpu and (cpu["variant"] == cpu["best"] or "SIGILL" in cpu["why"]), r
    assert r["local_cpu_backend"] == f"libggml-cpu-{cpu['variant']}.so", r
    assert r["local_status"] == 200 and r["local_finish"] in ("end_turn", "max_tokens"), r
    assert r["local_state"] == "ready", r
    assert r["header_share"] > 0.3, f"the window did not show the dashboard: {r}"
