"""The web app as a Hugging Face Space for one pushed LoRA.

`python -m infer lora push RUN_DIR --repo USER/NAME --with-app` adds `app.py` and `requirements.txt` to
what it uploads. That app.py serves the app over the LoRA folder it sits in (a clone or download of the
model repo), or, when it sits alone (a Space made from it), over the model repo it names, downloaded
with huggingface_hub. Either way the folder is presented to the app as runs/<artist>/.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from oeuvre.atomic import atomic_write_text

# Names enter the generated code as Python literals (repr), so no folder name can break or inject code.
APP_TEMPLATE = '''"""oeuvre web app for one LoRA: `python app.py`, or a Hugging Face Space."""

from pathlib import Path

from infer.app.space import serve_lora_folder

HERE = Path(__file__).resolve().parent
# Next to the LoRA files (a clone of the model repo): use them; alone in a Space: fetch the model repo.
ARTIST, REPO = {artist!r}, {repo!r}
serve_lora_folder(HERE if (HERE / f"{{ARTIST}}.safetensors").is_file() else REPO, artist=ARTIST)
'''

# oeuvre itself is not on PyPI: a Space installs it from its source (replace with your fork's URL).
REQUIREMENTS = """# oeuvre (this project) and its dependencies; point this at the oeuvre source you use.
oeuvre @ git+https://github.com/OWNER/oeuvre
"""


def write_space_files(run_dir: str | Path, repo: str) -> list[tuple[Path, str]]:
    """Write RUN_DIR/lora/space/{app.py, requirements.txt}; (local file, path in the repo) for the upload."""
    artist = Path(run_dir).name
    folder = Path(run_dir) / "lora" / "space"
    app = folder / "app.py"
    requirements = folder / "requirements.txt"
    atomic_write_text(app, APP_TEMPLATE.format(artist=artist, repo=repo))
    atomic_write_text(requirements, REQUIREMENTS)
    return [(app, "app.py"), (requirements, "requirements.txt")]


def runs_view(lora_folder: Path, artist: str) -> Path:
    """A temporary runs/ folder whose <artist>/lora (and samples) are links to the LoRA folder."""
    runs = Path(tempfile.mkdtemp(prefix="oeuvre-space-")) / "runs"
    run = runs / artist
    run.mkdir(parents=True)
    (run / "lora").symlink_to(lora_folder.resolve(), target_is_directory=True)
    if (lora_folder / "samples").is_dir():
        (run / "samples").symlink_to((lora_folder / "samples").resolve(), target_is_directory=True)
    return runs


def serve_lora_folder(source: str | Path, artist: str) -> None:
    """Serve the app for one LoRA: `source` is its folder or a Hub model repo id. Spaces set
    GRADIO_SERVER_NAME/PORT; elsewhere it binds 127.0.0.1:7860 like `python -m infer app`."""
    from infer.app.handlers import AppState
    from infer.app.page import launch

    folder = Path(source)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(source), repo_type="model"))
    state = AppState(runs_dir=runs_view(folder, artist))
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    launch(state, host=host, port=port)
