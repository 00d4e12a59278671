"""Informer (encoder) as a Qlib model: one prediction per (instrument, day) from a ``step_len`` window.

Zhou, Zhang, Peng, Zhang, Li, Xiong and Zhang, "Informer: Beyond Efficient Transformer for Long Sequence
Time-Series Forecasting", AAAI 2021 (arXiv:2012.07436).

What is kept from the paper:

* **ProbSparse self-attention.** For each query the sparsity measurement over ``U = c·⌈ln L_K⌉`` sampled keys is
  ``M(q_i, K) = max_j(q_i·k_j/√d) − mean_j(q_i·k_j/√d)``; only the top ``u = c·⌈ln L_Q⌉`` queries by ``M`` attend
  (full softmax over all keys); the other ("lazy") queries output the mean of ``V``, as in the paper's encoder.
  With ``u ≥ L_Q`` every query is active and the layer equals full attention (tested).
* **Self-attention distilling** between encoder layers: ``Conv1d(k=3) → BatchNorm → ELU → MaxPool(k=3, stride 2)``,
  which halves the sequence length (``L → ⌈L/2⌉``).
* Encoder layer = attention + residual + LayerNorm, then a position-wise feed-forward (two ``k=1`` convolutions)
  + residual + LayerNorm; token embedding plus sinusoidal positions.

Simplifications (stated, not hidden):

* Encoder only: predicting one value per day needs no generative decoder; the last position of the last encoder
  layer goes through a linear head (as Qlib's ``pytorch_transformer_ts`` does).
* A linear token embedding and no calendar ("time stamp") embedding: Qlib windows carry features only.
* Keys are sampled uniformly at random while training; in evaluation they are evenly spaced, so predictions are
  deterministic (the paper samples in both).
* One encoder stack (no half-length replica stack).

The Qlib side follows ``qlib.contrib.model.pytorch_transformer_ts``: ``fit(dataset, evals_result, save_path)``
with ``train_epoch``/``test_epoch`` and Qlib's own early stopping on ``-loss``, and
``predict(dataset, segment="test") -> pd.Series``. It reads ``TSDatasetH`` windows; a plain ``DatasetH`` row of
``d_feat·T`` features is read as Qlib's Alpha360 layout (``[N, d_feat, T]``).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from qlib.data.dataset import DatasetH, TSDatasetH
from qlib.data.dataset.handler import DataHandlerLP
from qlib.log import get_module_logger
from qlib.model.base import Model
from qlib.utils import get_or_create_path
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from qmlops.exceptions import ValidationError

__all__ = ["DistillingLayer", "Informer", "InformerModel", "ProbSparseSelfAttention"]


# ------------------------------------------------------------------------------------------------ network
class ProbSparseSelfAttention(nn.Module):
    """Multi-head ProbSparse self-attention over ``x: [N, L, d_model]`` (no mask: encoder self-attention)."""

    def __init__(self, d_model: int, n_heads: int, factor: int = 5, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValidationError(f"d_model={d_model} must be divisible by nhead={n_heads}", field="nhead")
        self.n_heads, self.d_head, self.factor = n_heads, d_model // n_heads, factor
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def n_top(self, length: int) -> int:
        """``u = c·⌈ln L⌉``, at most ``L``."""
        return min(self.factor * math.ceil(math.log(max(length, 2))), length)

    def _sample_keys(self, length_q: int, length_k: int, device: torch.device) -> torch.Tensor:
        n_sample = self.n_top(length_k)
        if self.training:
            return torch.randint(length_k, (length_q, n_sample), device=device)
        return (
            torch.linspace(0, length_k - 1, n_sample, device=device).round().long().expand(length_q, n_sample)
        )

    def sparsity(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``M(q_i, K)`` (max minus mean of scaled scores over sampled keys) for ``q, k: [N, H, L, d]``."""
        length_q, length_k = q.shape[-2], k.shape[-2]
        index = self._sample_keys(length_q, length_k, q.device)  # [L_Q, U]
        k_sample = k[:, :, index, :]  # [N, H, L_Q, U, d]
        scores = torch.einsum("nhld,nhlud->nhlu", q, k_sample) / math.sqrt(self.d_head)
        return scores.max(dim=-1).values - scores.mean(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        q, k, v = (
            proj(x).view(n, length, self.n_heads, self.d_head).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )  # [N, H, L, d]
        u = self.n_top(length)
        # Lazy queries get the mean of V; the top-u queries by M(q, K) attend over all keys.
        context = v.mean(dim=-2, keepdim=True).expand(n, self.n_heads, length, self.d_head).clone()
        top = self.sparsity(q, k).topk(u, dim=-1).indices  # [N, H, u]
        q_top = torch.gather(q, 2, top.unsqueeze(-1).expand(-1, -1, -1, self.d_head))
        attn = torch.softmax(q_top @ k.transpose(-2, -1) / math.sqrt(self.d_head), dim=-1)
        context.scatter_(2, top.unsqueeze(-1).expand(-1, -1, -1, self.d_head), self.dropout(attn) @ v)
        return self.out(context.transpose(1, 2).reshape(n, length, self.n_heads * self.d_head))

    def full_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Ordinary softmax attention with the same weights (the reference ProbSparse reduces to)."""
        n, length, _ = x.shape
        q, k, v = (
            proj(x).view(n, length, self.n_heads, self.d_head).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_head), dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(n, length, self.n_heads * self.d_head))


class DistillingLayer(nn.Module):
    """Self-attention distilling: Conv1d(k=3) → BatchNorm → ELU → MaxPool(k=3, stride=2); ``L → ⌈L/2⌉``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(d_model)
        self.activation = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, d_model] -> [N, ceil(L/2), d_model]
        y = self.pool(self.activation(self.norm(self.conv(x.transpose(1, 2)))))
        return y.transpose(1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, factor: int, dropout: float) -> None:
        super().__init__()
        self.attention = ProbSparseSelfAttention(d_model, n_heads, factor, dropout)
        self.ff = nn.Sequential(
            nn.Conv1d(d_model, d_ff, 1), nn.GELU(), nn.Dropout(dropout), nn.Conv1d(d_ff, d_model, 1)
        )
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x)))
        return self.norm2(x + self.dropout(self.ff(x.transpose(1, 2)).transpose(1, 2)))


class Informer(nn.Module):
    """Informer encoder with distilling and a one-value head: ``[N, T, d_feat] -> [N]``."""

    def __init__(
        self,
        d_feat: int,
        d_model: int = 32,
        n_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 64,
        factor: int = 5,
        dropout: float = 0.0,
        distil: bool = True,
        max_len: int = 1000,
    ) -> None:
        super().__init__()
        self.embedding = nn.Linear(d_feat, d_model)
        position = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
        self.register_buffer("pe", pe)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, d_ff, factor, dropout) for _ in range(num_layers)
        )
        self.distil = (
            nn.ModuleList(DistillingLayer(d_model) for _ in range(num_layers - 1)) if distil else None
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pe: torch.Tensor = self.pe  # type: ignore[assignment]
        h = self.dropout(self.embedding(x) + pe[: x.shape[1]])
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.distil is not None and i < len(self.distil):
                h = self.distil[i](h)
        return self.norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)[:, -1, :]).squeeze(-1)


# ------------------------------------------------------------------------------------------- Qlib model
class InformerModel(Model):
    """Qlib ``Model`` around :class:`Informer`; parameters mirror ``pytorch_transformer_ts.TransformerModel``."""

    def __init__(
        self,
        d_feat: int = 20,
        d_model: int = 32,
        nhead: int = 4,
        num_layers: int = 2,
        d_ff: int = 64,
        factor: int = 5,
        distil: bool = True,
        dropout: float = 0.0,
        batch_size: int = 2048,
        n_epochs: int = 100,
        lr: float = 0.0001,
        metric: str = "",
        early_stop: int = 5,
        loss: str = "mse",
        optimizer: str = "adam",
        reg: float = 1e-3,
        n_jobs: int = 0,
        GPU: int = 0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if loss != "mse":
            raise ValidationError(f"unknown loss {loss!r}; only 'mse' is supported", field="loss")
        if metric not in ("", "loss"):
            raise ValidationError(f"unknown metric {metric!r}; use '' or 'loss'", field="metric")
        self.d_feat, self.batch_size, self.n_epochs, self.lr = d_feat, batch_size, n_epochs, lr
        self.metric, self.early_stop, self.loss, self.n_jobs, self.seed = (
            metric,
            early_stop,
            loss,
            n_jobs,
            seed,
        )
        self.device = torch.device(f"cuda:{GPU}" if torch.cuda.is_available() and GPU >= 0 else "cpu")
        self.logger = get_module_logger("InformerModel")
        if seed is not None:
            np.random.seed(seed)
            torch.manual_seed(seed)
        self.model = Informer(d_feat, d_model, nhead, num_layers, d_ff, factor, dropout, distil).to(
            self.device
        )
        optimizers = {"adam": torch.optim.Adam, "gd": torch.optim.SGD}
        if optimizer.lower() not in optimizers:
            raise ValidationError(f"unknown optimizer {optimizer!r}; use 'adam' or 'gd'", field="optimizer")
        self.train_optimizer = optimizers[optimizer.lower()](self.model.parameters(), lr=lr, weight_decay=reg)
        self.fitted = False

    @property
    def use_gpu(self) -> bool:
        return self.device != torch.device("cpu")

    def loss_fn(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        mask = ~torch.isnan(label)
        return torch.mean((pred[mask].float() - label[mask].float()) ** 2)

    def metric_fn(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return -self.loss_fn(pred, label)

    def _samples(self, dataset: DatasetH, segment: Any, data_key: str) -> tuple[Any, pd.Index]:
        """Windows ``[N, T, d_feat + 1]`` (label last) and their (datetime, instrument) index."""
        if isinstance(dataset, TSDatasetH) or hasattr(dataset, "step_len"):
            sampler = dataset.prepare(segment, col_set=["feature", "label"], data_key=data_key)
            sampler.config(fillna_type="ffill+bfill")
            return sampler, sampler.get_index()
        frame = dataset.prepare(segment, col_set=["feature", "label"], data_key=data_key)
        features = frame["feature"].to_numpy(dtype=np.float32)
        if features.shape[1] % self.d_feat:
            raise ValidationError(
                f"{features.shape[1]} features are not d_feat={self.d_feat} × T; use a TSDatasetH",
                field="d_feat",
            )
        x = features.reshape(len(frame), self.d_feat, -1).transpose(0, 2, 1)  # Alpha360 layout -> [N, T, F]
        label = np.broadcast_to(frame["label"].to_numpy(dtype=np.float32)[:, :1, None], (*x.shape[:2], 1))
        return TensorDataset(torch.from_numpy(np.concatenate([x, label], axis=2))), frame.index

    def _loader(self, samples: Any, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            samples, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.n_jobs, drop_last=drop_last
        )

    @staticmethod
    def _batch(data: Any) -> torch.Tensor:
        return data[0] if isinstance(data, list | tuple) else data

    def train_epoch(self, data_loader: DataLoader) -> None:
        self.model.train()
        for data in data_loader:
            data = self._batch(data).to(self.device)
            pred = self.model(data[:, :, :-1].float())
            loss = self.loss_fn(pred, data[:, -1, -1])
            self.train_optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(self.model.parameters(), 3.0)
            self.train_optimizer.step()

    def test_epoch(self, data_loader: DataLoader) -> tuple[float, float]:
        self.model.eval()
        losses, scores = [], []
        with torch.no_grad():
            for data in data_loader:
                data = self._batch(data).to(self.device)
                pred = self.model(data[:, :, :-1].float())
                label = data[:, -1, -1]
                losses.append(self.loss_fn(pred, label).item())
                scores.append(self.metric_fn(pred, label).item())
        return float(np.mean(losses)), float(np.mean(scores))

    def fit(
        self, dataset: DatasetH, evals_result: dict[str, Any] | None = None, save_path: str | None = None
    ) -> None:
        evals_result = {} if evals_result is None else evals_result
        train, _ = self._samples(dataset, "train", DataHandlerLP.DK_L)
        valid, _ = self._samples(dataset, "valid", DataHandlerLP.DK_L)
        if len(train) == 0 or len(valid) == 0:
            raise ValidationError("empty train or valid segment", field="dataset.segments")
        train_loader = self._loader(train, shuffle=True, drop_last=len(train) > self.batch_size)
        valid_loader = self._loader(valid)
        save_path = get_or_create_path(save_path)
        best_score, best_epoch, stop_steps = -np.inf, 0, 0
        best_param = copy.deepcopy(self.model.state_dict())
        evals_result["train"] = []
        evals_result["valid"] = []
        self.fitted = True
        for step in range(self.n_epochs):
            self.train_epoch(train_loader)
            train_loss, train_score = self.test_epoch(train_loader)
            val_loss, val_score = self.test_epoch(valid_loader)
            self.logger.info("epoch %d: train %.6f, valid %.6f", step, train_score, val_score)
            evals_result["train"].append(train_score)
            evals_result["valid"].append(val_score)
            if val_score > best_score:
                best_score, best_epoch, stop_steps = val_score, step, 0
                best_param = copy.deepcopy(self.model.state_dict())
            else:
                stop_steps += 1
                if stop_steps >= self.early_stop:
                    self.logger.info("early stop at epoch %d", step)
                    break
        self.logger.info("best score: %.6f @ %d", best_score, best_epoch)
        self.model.load_state_dict(best_param)
        torch.save(best_param, save_path)
        if self.use_gpu:
            torch.cuda.empty_cache()

    def predict(self, dataset: DatasetH, segment: str | slice = "test") -> pd.Series:
        if not self.fitted:
            raise ValueError("model is not fitted yet!")
        samples, index = self._samples(dataset, segment, DataHandlerLP.DK_I)
        self.model.eval()
        preds = []
        with torch.no_grad():
            for data in self._loader(samples):
                data = self._batch(data).to(self.device)
                preds.append(self.model(data[:, :, :-1].float()).detach().cpu().numpy().reshape(-1))
        return pd.Series(np.concatenate(preds) if preds else np.array([]), index=index)
