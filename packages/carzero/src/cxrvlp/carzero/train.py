"""Train CARZero: `accelerate launch -m cxrvlp.carzero.train CONFIG.yaml [key=value ...]` (or `python -m`).

Packaged configs (`cxrvlp/carzero/configs/`): `carzero_vit_b16.yaml` (the released recipe: Adam lr 5e-5,
betas (0.5, 0.999), L2 weight decay 1e-6, constant LR, 15 epochs, fp16 AMP, clipping 0.25, batch curriculum
64 -> 128 -> 256, val_loss every epoch, best kept, early stop after 10 epochs without improvement),
`tiny.yaml` (CPU demo on the synthetic mirror) and `small.yaml` (EfficientNet-Lite0 + MiniLM-L6). A config
name without a path is looked up there. The paper recipe needs `data.root` (MIMIC-CXR-JPG);
`data.synthetic=true` (set in tiny/small) trains on the generated mirror instead, with a banner in the log.

Distributed: nothing is gathered (see loss.py); each process scores its own B x B pairs. Gradient accumulation
sums the gradients of independent micro-batch B x B problems: it does NOT enlarge the set of in-batch
negatives (a 256-curriculum needs 256 samples per process, or the method changes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from cxrvlp.carzero.config import CarzeroTrainConfig
from cxrvlp.carzero.data import build_train_dataset
from cxrvlp.carzero.loss import CarzeroLoss
from cxrvlp.carzero.model import Carzero, build_model
from cxrvlp.carzero.official import UNUSED_PATTERNS
from cxrvlp.core.method import recipe_trainer, training_main
from cxrvlp.core.training import TaskModule
from cxrvlp.core.training.loop import process_state
from cxrvlp.core.training.task import MethodTask, batch_bookkeeping

TOKENIZER_DIR = "tokenizer"


def freeze_unused(model: Carzero) -> list[str]:
    """requires_grad=False on the parameters the forward never uses (EXACT: they never get a gradient, so the
    official Adam never moves them); lets plain DDP run without find_unused_parameters."""
    import re

    pats = [re.compile(p) for p in UNUSED_PATTERNS]
    frozen = []
    for name, p in model.named_parameters():
        if any(pt.search(name) for pt in pats):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


class CarzeroTrainModule(TaskModule):
    """CARZero + `CarzeroLoss` as one module (what DDP wraps; the loss owns no parameters)."""

    def __init__(self, model: Carzero, loss: CarzeroLoss | None = None) -> None:
        super().__init__(model, loss if loss is not None else CarzeroLoss())

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Weighted `i2t_loss` + `t2i_loss` (sum = the official total) and the two B x B logit matrices."""
        out = self.model(batch["images"], batch["tokens"])
        terms = self.loss(out.i2t, out.t2i)
        return {
            "i2t_loss": terms["i2t_loss"],
            "t2i_loss": terms["t2i_loss"],
            "i2t_logits": out.i2t,
            "t2i_logits": out.t2i,
        }


class CarzeroTask(MethodTask):
    """`cxrvlp.core.training.TrainingTask` for CARZero."""

    in_batch_negatives = "local"  # B x B pairs of the local batch, nothing gathered (loss.py)

    method = "carzero"

    def make_train_dataset(self):
        return build_train_dataset(self.cfg.data, train=True, root=self.data_root)

    def _vocab_files(self, state) -> dict[str, bytes]:
        """The main process builds the (deterministic) WordPiece vocab from the training sentences; every
        rank gets its files, so only rank 0 reads the texts."""
        from cxrvlp.core.text.tokenize import build_tokenizer_from_texts

        files: dict[str, bytes] = {}
        if state.is_main_process:
            with tempfile.TemporaryDirectory(prefix="carzero-tokenizer-") as tmp:
                texts = self.build_train_dataset().texts()
                build_tokenizer_from_texts(texts, tmp, vocab_size=self.cfg.tokenizer_vocab_size)
                files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
        if state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            files = broadcast_object_list([files])[0]
        return files

    def _build_tokenizer(self):
        from cxrvlp.core.text.tokenize import load_tokenizer

        mcfg = self.cfg.model
        if mcfg.tokenizer is not None:
            return load_tokenizer(mcfg.tokenizer)
        state = process_state(self.cfg)
        out = Path(self.cfg.output_dir) / TOKENIZER_DIR
        if self.cfg.resume and out.is_dir():
            # a resumed run reuses its vocabulary: a rebuilt one could renumber the tokens it trained with
            tok = load_tokenizer(out)
        else:
            files = self._vocab_files(state)
            with tempfile.TemporaryDirectory(prefix="carzero-tokenizer-") as tmp:
                for name, data in files.items():
                    (Path(tmp) / name).write_bytes(data)
                tok = load_tokenizer(tmp)
                if state.is_main_process:  # kept in the run folder for resume (atomic replace)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    part = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out.parent))
                    tok.save_pretrained(str(part))
                    if out.is_dir():
                        shutil.rmtree(out)
                    os.replace(part, out)
        # the model config follows the tokenizer actually used
        mcfg.tokenizer = str(out)
        mcfg.text_config = {**mcfg.text_config, "vocab_size": len(tok)}
        return tok

    def build_model(self) -> CarzeroTrainModule:
        """CARZero + its loss; parameters the forward never uses frozen (see `freeze_unused`)."""
        self.tokenizer = self._build_tokenizer()  # after run_training has checked the run folder
        model = build_model(self.cfg.model)
        model.set_tokenizer(self.tokenizer)
        freeze_unused(model)
        return CarzeroTrainModule(model, CarzeroLoss(self.cfg.loss.i2t_weight, self.cfg.loss.t2i_weight))

    def build_val_dataset(self):
        """The official validation split (MIMIC `validate`), eval transform, same sentences and loss."""
        d = self.cfg.data
        if d.val_split is None:
            return None
        return build_train_dataset(d, train=False, split=d.val_split, root=self.data_root)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from cxrvlp.core.text.tokenize import tokenize

        tokens = tokenize(self.tokenizer, [s["text"] for s in samples], self.cfg.model.text_max_length,
                          padding="longest" if self.cfg.pad_to_longest else "max_length")  # fmt: skip
        return {
            "images": torch.stack([s["image"] for s in samples]),
            "tokens": tokens,
            **batch_bookkeeping(samples),
        }


train = recipe_trainer("carzero", CarzeroTrainConfig, CarzeroTask)


if __name__ == "__main__":
    training_main(train, __doc__)
