"""The experiment pipeline: setup -> calibrate -> quantize -> evaluate, on Lightning Fabric.

Each stage is an explicit method wrapped by ``_stage`` so callbacks see ``on_stage_start/end``; the run
directory receives config.yaml, environment.json and metrics.json (the source of truth; loggers mirror it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch

from mosaic_exp.config import ConfigError, RunConfig, config_hash, parse_speed_shape
from mosaic_exp.logging.environment import capture_environment
from mosaic_exp.logging.records import write_json
from mosaic_exp.runner.callbacks import ConsoleSummary, StageTimer, progress_enabled

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but no CUDA device is available")
    return name


def data_dir_of(cfg: RunConfig) -> str | None:
    return cfg.paths.data_dir


def preflight(cfg: RunConfig) -> None:
    """Cheap checks before any expensive work: weights and data can be had."""
    from mosaic_exp.data import check_available
    from mosaic_exp.models.loader import check_model_available

    check_model_available(cfg.model)
    if cfg.kernel.variant != "reference":
        from mosaic_exp.kernels.swap import check_kernel_config

        check_kernel_config(cfg.kernel.variant, cfg.quant.w_bits, cfg.quant.a_bits, cfg.quant.method,
                            resolve_device(cfg.device))
    from mosaic_exp.runner.layer_quant import needs_calibration

    if needs_calibration(cfg):
        check_available(cfg.calib.dataset, data_dir_of(cfg), split=cfg.calib.split, purpose="calibration")
    for d in cfg.eval.perplexity:
        check_available(d, data_dir_of(cfg))
    for task in cfg.eval.zeroshot:
        check_available(task, data_dir_of(cfg))
    if cfg.eval.speed and cfg.eval.speed_cuda_graph and resolve_device(cfg.device) != "cuda":
        raise ConfigError(f"eval.speed={list(cfg.eval.speed)} with eval.speed_cuda_graph=true needs a CUDA device "
                          f"(device={cfg.device!r} resolves to {resolve_device(cfg.device)!r}); set "
                          f"eval.speed_cuda_graph=false to time eager forwards")
    if cfg.eval.speed and cfg.eval.speed_cuda_graph and cfg.quant.method == "zipperquant" \
            and cfg.quant.high_kernel != "reference":
        raise ConfigError(f"eval.speed with eval.speed_cuda_graph=true: quant.high_kernel={cfg.quant.high_kernel!r} "
                          f"runs on the CPU and cannot be captured in a CUDA graph; set eval.speed_cuda_graph=false")


class Pipeline:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, resolved_config: dict, sweep_group: str | None = None,
                 callbacks: list | None = None):
        from lightning.fabric import Fabric

        from mosaic_exp.logging.loggers import make_loggers

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_config = resolved_config
        self.config_hash = config_hash(cfg)
        self.metrics: dict = {}
        self.status = "running"
        self.kernel_ran: str | None = None
        loggers, self.logger_desc = make_loggers(
            cfg.logger, self.run_dir, run_name=f"{cfg.name}-{self.config_hash[:6]}", group=sweep_group,
            config={**resolved_config, "config_hash": self.config_hash}, tags=[cfg.quant.method, cfg.model.name])
        accelerator = resolve_device(cfg.device)
        self.fabric = Fabric(accelerator=accelerator, devices=1, loggers=loggers,
                             callbacks=[StageTimer(), ConsoleSummary(), *(callbacks or [])])
        self.device = self.fabric.device
        self.env = capture_environment(Path(__file__).resolve().parents[2])
        self.model = self.tokenizer = self.calib_ids = self.report = None

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _stage(self, name: str):
        self.fabric.call("on_stage_start", stage=name, pipeline=self)
        yield
        self.fabric.call("on_stage_end", stage=name, pipeline=self)

    def _cache(self, what: str) -> Path:
        return Path(self.cfg.paths.cache_dir).expanduser() / what

    def _write_metrics(self) -> None:
        headline_name = next((k for k in self.metrics if k.startswith("ppl/")), None)
        write_json(self.run_dir / "metrics.json", {
            "status": self.status,
            "headline_name": headline_name,
            "headline": self.metrics.get(headline_name) if headline_name else None,
            "metrics": self.metrics,
            "config_hash": self.config_hash,
            "kernel_ran": self.kernel_ran,
            "logger": self.logger_desc,
            "config": self.resolved_config,
            "environment": self.env,
        })

    # ------------------------------------------------------------------ stages
    def setup(self) -> None:
        from mosaic_exp.models.loader import load_model

        with self._stage("setup"):
            self.model, self.tokenizer = load_model(self.cfg.model, self.cfg.paths.cache_dir)
            n_params = sum(p.numel() for p in self.model.parameters())
            self.metrics["model/params_m"] = n_params / 1e6

    def calibrate(self) -> None:
        from mosaic_exp.runner.layer_quant import needs_calibration

        if not needs_calibration(self.cfg):
            return
        from mosaic_exp.data import get_calibration_windows

        c = self.cfg.calib
        with self._stage("calibrate"):
            self.calib_ids = get_calibration_windows(self.tokenizer, c.dataset, c.nsamples, c.seqlen, c.seed,
                                                     data_dir_of(self.cfg), split=c.split,
                                                     cache_dir=self._cache("tokens"))

    def quantize(self) -> None:
        q = self.cfg.quant
        if q.method == "fp16":
            self.metrics["bits_per_weight"] = float(torch.finfo(self.model.dtype).bits)
            self.kernel_ran = "torch.nn.Linear (unquantized)"
            return
        from mosaic_exp.models.adapters import get_adapter
        from mosaic_exp.runner.sequential import quantize_model

        c = self.cfg.calib
        store = self.device if c.device == "auto" else torch.device(c.device)
        adapter = get_adapter(self.cfg.model.arch)
        with self._stage("quantize"):
            sensitivity = self._sensitivity(adapter)
            self.report = quantize_model(self.model, adapter, self.calib_ids, self.cfg, self.device, store,
                                         sensitivity=sensitivity)
        self.metrics["bits_per_weight"] = self.report.bits_per_weight()
        self.metrics["residual/kept_fraction"] = self.report.residual_fraction()
        if self.report.high_density() is not None:  # ZipperQuant: weights with high-order bits (CPU part)
            self.metrics["zipperquant/high_density"] = self.report.high_density()
        self.kernel_ran = self._swap_kernels()
        if self.cfg.save_quantized:
            from mosaic_exp.formats import save_quantized

            save_quantized(self.report.weights, self.run_dir / "quantized")
        write_json(self.run_dir / "layers.json", self.report.layer_info)

    def _sensitivity(self, adapter) -> dict | None:
        """residual.sensitivity=fisher: the output Fisher of every linear, from the unquantized model."""
        r = self.cfg.residual
        if self.cfg.quant.method != "mosaic" or r.sensitivity == "none" or r.budget == 0 or r.selector == "none":
            return None  # no residual block will be ranked
        from mosaic_exp.residual.sensitivity import output_fisher

        t0 = time.perf_counter()
        fisher = output_fisher(self.model, adapter, self.calib_ids, self.device, windows=r.sensitivity_windows)
        if self.device.type != "cpu":
            self.model.to("cpu")  # the sequential pass moves one decoder layer at a time
        self.metrics["time/sensitivity_s"] = time.perf_counter() - t0
        log.info("output Fisher of %d linears in %.1fs", len(fisher), self.metrics["time/sensitivity_s"])
        return fisher

    def _swap_kernels(self) -> str:
        variant = self.cfg.kernel.variant
        zipperquant = self.cfg.quant.method == "zipperquant"
        if variant == "reference" and not zipperquant:
            return "reference (dequantized weights in torch.nn.Linear)"
        from mosaic_exp.kernels.swap import swap_bitsplit_low, swap_quant_linears

        dtype = self.model.dtype
        if variant != "reference" and dtype == torch.float32:  # the native kernels take fp16/bf16 activations
            dtype = torch.float16
            self.model.to(dtype)
        if zipperquant:  # its BitSplitLinear modules stay; their dense low part runs the variant
            return swap_bitsplit_low(self.model, self.report.weights, variant, dtype, self.cfg.quant.high_kernel)
        ran = swap_quant_linears(self.model, self.report.weights, variant, dtype)
        if self.cfg.kernel.fuse_shared_input:
            from mosaic_exp.kernels.swap import fuse_shared_input_linears
            from mosaic_exp.models.adapters import get_adapter

            n = fuse_shared_input_linears(self.model, self.report.weights, get_adapter(self.cfg.model.arch), variant,
                                          dtype)
            ran += f"; {n} shared-input groups fused (q/k/v, gate/up)"
        return ran

    def evaluate(self) -> None:
        from mosaic_exp.data import get_eval_tokens
        from mosaic_exp.eval.perplexity import evaluate_perplexity, metric_name

        e = self.cfg.eval
        with self._stage("evaluate"):
            self.model.to(self.device)
            for ds in e.perplexity:
                tokens = get_eval_tokens(self.tokenizer, ds, data_dir_of(self.cfg), seqlen=e.seqlen,
                                         cache_dir=self._cache("tokens"))
                res = evaluate_perplexity(self.model, tokens, e.seqlen, max_windows=e.max_windows,
                                          device=self.device, batch_size=e.batch_size, progress=progress_enabled())
                name = metric_name(ds, e.seqlen)
                self.metrics[name] = res["ppl"]
                self.metrics[f"eval/{ds}_windows"] = res["windows"]
                self.metrics[f"eval/{ds}_windows_total"] = tokens.shape[1] // e.seqlen
                log.info("%s = %.4f (%d of %d windows)", name, res["ppl"], res["windows"],
                         tokens.shape[1] // e.seqlen)
            if e.zeroshot:
                from mosaic_exp.eval.zeroshot import evaluate_zeroshot

                from mosaic_exp.eval.zeroshot import flatten_results

                zs = evaluate_zeroshot(self.model, self.tokenizer, list(e.zeroshot), data_dir=data_dir_of(self.cfg),
                                       limit=e.zeroshot_limit, backend=e.zeroshot_backend, device=self.device,
                                       progress=progress_enabled())
                self.metrics.update(flatten_results(zs))
                self.metrics["zeroshot/backend"] = zs["backend"]
            self._measure_speed()

    def _measure_speed(self) -> None:
        from mosaic_exp.eval.forward_speed import time_forward

        e = self.cfg.eval
        rows = []
        for item in e.speed:
            b, s = parse_speed_shape(item)
            r = time_forward(self.model, b, s, device=self.device, cuda_graph=e.speed_cuda_graph, reps=e.speed_reps,
                             seed=self.cfg.seed)
            self.metrics[f"speed/forward_ms_{b}x{s}"] = r.median_ms
            self.metrics[f"speed/tokens_per_s_{b}x{s}"] = r.tokens_per_s
            self.metrics["speed/mode"] = r.mode
            rows.append(r.as_dict())
            log.info("forward %dx%d (%s): %.3f ms median, %.0f tokens/s", b, s, r.mode, r.median_ms, r.tokens_per_s)
        if rows:
            write_json(self.run_dir / "speed.json", {"rows": rows})

    # ------------------------------------------------------------------ driver
    def run(self) -> float:
        """Run every stage; always write metrics.json (status ok/failed). Returns the headline metric."""
        write_json(self.run_dir / "environment.json", self.env)
        self.fabric.seed_everything(self.cfg.seed, verbose=False)  # every RNG the run may touch
        try:
            self.setup()
            self.calibrate()
            self.quantize()
            self.evaluate()
            self.status = "ok"
        except BaseException as exc:
            self.status = "failed"
            self.metrics["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._write_metrics()
            numeric = {k: v for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if numeric:
                self.fabric.log_dict(numeric)
            for lg in self.fabric.loggers:
                with contextlib.suppress(Exception):
                    lg.finalize(self.status)
            if self.status == "ok":
                self.fabric.call("on_run_end", pipeline=self)
        headline = next((v for k, v in self.metrics.items() if k.startswith("ppl/")), math.nan)
        return float(headline)
