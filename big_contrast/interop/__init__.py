"""Interop with the public checkpoints: OpenCLIP, timm (DINOv2), Hugging Face, big_vision.

One module per source format, each a name table and the few reshapes between
the source's tensors and our parameters, both ways (`rules`), plus the
architecture → our config mapping: `openclip`, `timm`, `hf`, `big_vision`.
`convert.import_checkpoint` writes a run directory that `load_encoder`
evaluates and `config.init_from.path` continues from; `convert.export_checkpoint`
writes a run in a source's layout. `tensors` reads `.safetensors` and `.npz`
without PyTorch (`.pt`/`.bin` pickles with it).

    python -m big_contrast.interop import --from openclip --weights open_clip_model.safetensors \\
        --arch ViT-B-32 --tokenizer bpe_simple_vocab_16e6.txt.gz --out runs/openclip_b32
    python -m big_contrast.interop export --to openclip --workdir runs/mine --out mine.safetensors

This package sits above the models, the train state and the checkpoints; the
trainer and the evaluators know nothing of it.
"""

from big_contrast.interop.convert import SOURCES, export_checkpoint, import_checkpoint
from big_contrast.interop.rules import MismatchError

__all__ = ["SOURCES", "MismatchError", "export_checkpoint", "import_checkpoint"]
