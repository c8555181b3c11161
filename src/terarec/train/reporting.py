"""Progress bar and TensorBoard logging for the training loop."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from tqdm import tqdm

__all__ = ["StepReporter", "tensorboard_available"]


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboard`` package is installed (``pip install terarec[tensorboard]``)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class StepReporter:
    """Shows training progress (loss, examples/s) and writes TensorBoard scalars every ``log_every`` steps.

    The bar and TensorBoard are touched only once per ``log_every`` steps, so reporting costs
    the loop nearly nothing.

    Args:
        run_dir (Path): TensorBoard events go to ``run_dir / "tensorboard"``.
        total_steps (int, optional): length of the progress bar; ``None`` when unknown (a stream).
        initial_step (int): where a resumed run starts.
        log_every (int): steps between reports.
        progress (bool): draw the progress bar.
        events (bool, optional): write TensorBoard events (one rank of a distributed run does).
            Default: ``True``

    Attributes:
        loss_curve (list[tuple[int, float]]): ``(step, mean training loss since the previous
            report)`` at every report, for ``metrics.json``.
    """

    def __init__(
        self, run_dir: Path, total_steps: int | None, initial_step: int, log_every: int, progress: bool, events: bool = True
    ) -> None:
        self.log_every = log_every
        self.bar = tqdm(total=total_steps, initial=initial_step, disable=not progress, unit="step", dynamic_ncols=True)
        self.writer = None
        if events and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        self.loss_curve: list[tuple[int, float]] = []
        self._loss_sum = 0.0
        self._loss_count = 0
        self._examples = 0
        self._since = time.perf_counter()
        self._pending_steps = 0

    def log_step(self, step: int, loss: float, batch_size: int) -> bool:
        """Records one step; returns whether this step reported (every ``log_every``)."""
        self._loss_sum += loss
        self._loss_count += 1
        self._examples += batch_size
        self._pending_steps += 1
        if step % self.log_every:
            return False
        elapsed = max(time.perf_counter() - self._since, 1e-9)
        rate = self._examples / elapsed
        mean_loss = self._loss_sum / self._loss_count
        self.loss_curve.append((step, mean_loss))
        self.bar.update(self._pending_steps)
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", ex_s=f"{rate:,.0f}", refresh=False)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", mean_loss, step)
            self.writer.add_scalar("train/examples_per_second", rate, step)
        self._loss_sum, self._loss_count, self._examples, self._pending_steps = 0.0, 0, 0, 0
        self._since = time.perf_counter()
        return True

    def log_metrics(self, prefix: str, metrics: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        self.bar.update(self._pending_steps)
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> StepReporter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
