"""
The twistd dropin is found after a real, non-editable ``pip install .``
(STYLE.md: an import error in the dropin silently hides the plugin).
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_twistd_lists_gateway_after_pip_install(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # Install only our package into the new venv; its dependencies come from
    # ours through a .pth, so only the build backend may be downloaded.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", site, str(ROOT)],
        check=True, capture_output=True,
    )
    ours = subprocess.run(
        [sys.executable, "-c", "import twisted, os; print(os.path.dirname(os.path.dirname(twisted.__file__)))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    Path(site, "deps.pth").write_text(ours + "\n")
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys; sys.argv = ['twistd', '--help']; from twisted.scripts.twistd import run; run()"], capture_output=True, text=True, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "gateway" in out.stdout
    assert Path(site, "twisted", "plugins", "gateway_plugin.py").exists()
    # twisted/plugins must stay a namespace-less dropin directory.
    assert not Path(site, "twisted", "plugins", "__init__.py").exists()
    assert not Path(site, "twisted", "__init__.py").exists()
