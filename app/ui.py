"""The Studio's page: tabs in the order of the work (Model → Global gradient → Fine-tune → Compare → Chat → Export),
a teaching tab in front, and one job bar that follows the session's background job.

Every event has an explicit ``api_name``, so everything the page does can be scripted with ``gradio_client``
(see tests/test_app_api.py). Long work runs as a background job (:mod:`app.jobs`); a ``gr.Timer`` polls it every
two seconds and redraws the live figures only when the job moved. User errors (``dba.DBAError``) are shown as
``gr.Error`` pop-ups and in the job bar; the app keeps running.
"""
from __future__ import annotations

import functools
import html
import time
from pathlib import Path

import gradio as gr
import torch

from dba.compare import DEFAULT_RATIOS, METHODS
from dba.data import BUNDLED_DOMAINS
from dba.errors import DBAError
from dba.global_gradient import GlobalGradient
from dba.optim import AnnealConfig, BoostConfig, CorrectionConfig
from dba.train import read_run

from . import exports, tasks, teaching, uploads, views
from .jobs import REGISTRY, friendly_error
from .session import ModelChoice, Workspace, resolve_key, settle_key, workspace
from .settings import REPO_ROOT, StudioSettings, eval_every_for

POLL_SECONDS = 2.0
"""How often the page asks for news of its job."""
REDRAW_SECONDS = 4.0
"""Live figures are redrawn at most this often while a job runs (drawing competes with training for the CPU)."""
UPLOAD = "my upload"
PLOT = {"show_label": False, "container": True}
"""The figures carry their own titles; Gradio's label badge would sit on top of them."""
"""The data choice that means "the file uploaded beside it"."""

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="emerald", neutral_hue="slate",
                       font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"])
# (system fonts only: a classroom laptop or a test machine may be offline)

CSS = """
.gradio-container {max-width: 1320px !important; margin: auto;}
#dba-header h1 {margin-bottom: 0; font-size: 1.9rem;}
#dba-header p {margin-top: 2px; color: var(--body-text-color-subdued);}
.dba-badge {display:inline-block; padding:2px 10px; border-radius:999px; background:#eef2ff; color:#3730a3;
            font-size:0.85rem; margin-right:6px; border:1px solid #c7d2fe;}
.dba-jobbar {border:1px solid var(--border-color-primary); border-radius:10px; padding:10px 14px;
             background: var(--block-background-fill);}
.dba-jobline {font-size:0.95rem;}
.dba-dot {display:inline-block; width:9px; height:9px; border-radius:50%; background:#94a3b8; margin-right:8px;}
.dba-jobbar.running .dba-dot {background:#22c55e; animation: dbapulse 1.2s infinite;}
.dba-jobbar.queued .dba-dot {background:#f59e0b;}
.dba-jobbar.failed .dba-dot {background:#ef4444;}
.dba-jobbar.completed .dba-dot {background:#6366f1;}
@keyframes dbapulse {0% {opacity:1} 50% {opacity:.35} 100% {opacity:1}}
.dba-state {font-size:0.8rem; padding:1px 8px; border-radius:999px; background:#f1f5f9;}
.dba-state.running {background:#dcfce7; color:#166534;} .dba-state.failed {background:#fee2e2; color:#991b1b;}
.dba-state.completed {background:#e0e7ff; color:#3730a3;} .dba-state.cancelled {background:#fef3c7; color:#92400e;}
.dba-progress {height:8px; background:#e2e8f0; border-radius:999px; margin-top:8px; overflow:hidden;}
.dba-progress > div {height:100%; background:linear-gradient(90deg,#6366f1,#22c55e); transition: width .6s;}
.dba-error {margin-top:8px; color:#991b1b; background:#fef2f2; border:1px solid #fecaca; border-radius:8px;
            padding:6px 10px; font-size:0.9rem;}
.dba-jobbar.idle {color: var(--body-text-color-subdued);}
#teach-narration {min-height: 420px;}
#teach-run {min-height: 56px; font-size: 1.1rem;}
.dba-help {color: var(--body-text-color-subdued); font-size: 0.9rem;}
"""


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _guard(fn):
    """Turn the engine's user errors (and surprises) into a visible gr.Error; the app keeps running."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except DBAError as e:
            raise gr.Error(str(e), duration=None) from None
        except Exception as e:  # noqa: BLE001 -- OOM, device problems, bugs: say so, keep serving
            raise gr.Error(friendly_error(e), duration=None) from None
    return wrapper


def _device_line() -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        n = torch.cuda.device_count()
        return f"GPU: {name}" + (f" ×{n}" if n > 1 else "")
    return f"CPU ({torch.get_num_threads()} threads) — no GPU found; runs are CPU-sized"


def _file_path(value) -> str | None:
    """The local path of a gr.File value (a str in Gradio 6; tolerate objects with .name / dicts with path)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "name", None) or getattr(value, "path", None)


def _opt_int(x) -> int | None:
    """0 or empty = None (the engine's "all"/"rule")."""
    return int(x) if x not in (None, "") and int(x) > 0 else None


def _opt_float(x) -> float | None:
    return float(x) if x not in (None, "") and float(x) > 0 else None


def _parse_ratios(text: str) -> tuple[float, ...]:
    if not text or not str(text).strip():
        return ()
    try:
        vals = tuple(float(t) for t in str(text).replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise DBAError(f"Mixture ratios must be numbers separated by commas, e.g. 0.25, 0.5; got {text!r}.") from None
    if any(not 0 < v < 1 for v in vals):
        raise DBAError("Each mixture ratio is a share of general examples per batch, strictly between 0 and 1.")
    return vals


class Studio:
    """The page's handlers, bound to the settings (one instance per Blocks)."""

    def __init__(self, settings: StudioSettings):
        self.settings = settings
        self.roots = [settings.runs_root, (REPO_ROOT / "runs").resolve()]

    # ---- sessions -------------------------------------------------------------------------------------------
    def key(self, sid: str | None, request: gr.Request | None) -> str:
        """The session key: the page's key (from the browser's storage), else (API clients, early clicks) the
        Gradio session's (see app.session.resolve_key)."""
        return resolve_key(sid, getattr(request, "session_hash", None))

    def ws(self, sid, request) -> Workspace:
        return workspace(self.key(sid, request), self.settings)

    def inside(self, path, what: str) -> Path:
        """``path`` resolved, when it lies inside one of the Studio's runs folders (never elsewhere on the server)."""
        if not path:
            raise DBAError(f"No {what} chosen.")
        problems = []
        for root in self.roots:
            try:
                return views.require_inside(path, root, what)
            except DBAError as e:
                problems.append(str(e))
        missing = [m for m in problems if "does not exist" in m]
        raise DBAError(missing[0] if missing else
                       f"The {what} must lie inside {' or '.join(str(r) for r in dict.fromkeys(self.roots))}.")

    def domain_source(self, ws: Workspace, choice: str, file) -> str:
        if choice == UPLOAD:
            src = _file_path(file)
            if not src:
                raise DBAError("Choose a file to upload first (or pick a bundled domain).")
            dest, _ = uploads.accept_corpus(src, ws.uploads, self.settings.upload_bytes, Path(src).name)
            return str(dest)
        if choice not in BUNDLED_DOMAINS:
            raise DBAError(f"Unknown domain {choice!r}; choose one of {', '.join(BUNDLED_DOMAINS)} or upload a file.")
        return choice

    # ---- runs for the Chat and Export tabs ----------------------------------------------------------------------
    def run_choices(self, ws: Workspace) -> list[tuple[str, str]]:
        """Finished runs: this session's first (newest first), then others found under the runs folders."""
        seen, out = set(), []

        def add(d: Path):
            d = d.resolve()
            if str(d) in seen or not ((d / "adapter").exists() or (d / "model").exists()):
                return
            seen.add(str(d))
            try:
                info = read_run(d)
            except DBAError:
                return
            method = (info.get("config") or {}).get("method", "?")
            sc = (info.get("status") or {}).get("scores") or {}
            score = f" · S {sc['s']:.2f}" if sc.get("s") is not None else ""
            rel = next((str(d.relative_to(r)) for r in self.roots if r in d.parents), d.name)
            out.append((f"{method} · {rel}{score}", str(d)))

        for d in reversed(ws.runs):
            add(Path(d))
        found = []
        for root in self.roots:
            if root.exists():
                found += [p.parent for p in root.glob("**/status.json") if len(p.relative_to(root).parts) <= 5]
        for d in sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)[:60]:
            add(d)
        return out

    def compare_choices(self) -> list[str]:
        found = set()
        for root in self.roots:
            if root.exists():
                found |= {p.parent.resolve() for p in root.glob("**/compare.json")
                          if len(p.relative_to(root).parts) <= 4}
        return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]

    def run_dir_for(self, ws: Workspace, run: str | None) -> Path:
        if not run:
            choices = self.run_choices(ws)
            if not choices:
                raise DBAError("No finished run yet: fine-tune a model first (Fine-tune tab).")
            run = choices[0][1]
        return self.inside(run, "run folder")


# ----------------------------------------------------------------------------------------------------------------
# The page


def build_demo(settings: StudioSettings | None = None) -> gr.Blocks:
    """The Studio as a gr.Blocks (launch it with :func:`app.launch`)."""
    settings = settings or StudioSettings.from_env()
    S = Studio(settings)
    p = settings.preset
    boost, corr, anneal = BoostConfig(), CorrectionConfig(), AnnealConfig()

    # delete_cache: Gradio's copies of uploads and downloads older than a day go, checked hourly (Spaces' disk)
    with gr.Blocks(title="DBA Studio", fill_width=False, delete_cache=(3600, 86400)) as demo:
        sid = gr.State(None)
        seen = gr.State(None)
        browser_key = gr.BrowserState(None, storage_key="dba-studio-session")

        gr.HTML(f"""<div id="dba-header"><h1>DBA Studio</h1>
<p>Fine-tune a language model on a new domain <i>without forgetting</i> what it knew — Dynamic Boosted Annealing,
step by step, live.</p>
<span class="dba-badge">{html.escape(_device_line())}</span>
<span class="dba-badge">start model: {html.escape(settings.model)}</span>
<span class="dba-badge">preset: {html.escape(settings.preset_name)}</span></div>""")
        with gr.Row(equal_height=True):
            with gr.Column(scale=8):
                job_html = gr.HTML(views.job_bar(None), elem_id="job-bar")
            with gr.Column(scale=1, min_width=150):
                cancel_btn = gr.Button("■ Cancel job", variant="stop", size="md", elem_id="cancel-job")
                refresh_btn = gr.Button("↻", size="sm", visible=False)
        job_json = gr.JSON(visible=False)
        wait_timeout = gr.Number(value=60, visible=False)
        wait_btn = gr.Button(visible=False)

        with gr.Tabs(elem_id="tabs"):
            # ---------------------------------------------------------------------------------------- teaching
            with gr.Tab("Start here: see forgetting", id="teach", elem_id="tab-teach"):
                gr.Markdown(
                    "**One click, one lesson.** The Studio fine-tunes the model on a domain twice — the usual way "
                    "(*direct*) and with *DBA* — with the same data, seed and steps, and tells you what to look at "
                    f"while it runs. Preset **{settings.preset_name}**: {p.steps} steps, batch {p.batch_size}, "
                    f"LoRA rank {p.lora_rank}, {p.eval_items} quiz questions per set"
                    f"{f' ({p.duration})' if p.duration else ''}. The model is the one chosen in the Model tab.")
                with gr.Row(equal_height=True):
                    teach_domain = gr.Dropdown(list(BUNDLED_DOMAINS), value="finance", label="Domain to learn",
                                               scale=2)
                    teach_btn = gr.Button("▶ Run the lesson: direct vs DBA", variant="primary", scale=3,
                                          elem_id="teach-run")
                with gr.Row():
                    with gr.Column(scale=2):
                        teach_md = gr.Markdown("Press **Run the lesson** — the story of the run appears here.",
                                               elem_id="teach-narration")
                    with gr.Column(scale=3):
                        teach_scores = gr.Plot(label="S_G and S_D over steps", elem_id="teach-scores", **PLOT)
                        teach_loss = gr.Plot(label="Training loss", elem_id="teach-loss", **PLOT)
                with gr.Row():
                    teach_rho = gr.Plot(label="DBA: similarity ρ and step multiplier λ", elem_id="teach-rho", **PLOT)
                    teach_dc = gr.Plot(label="DBA: the dynamic-correction curve λ = f(ρ), current ρ marked",
                                       elem_id="teach-dc", **PLOT)
                with gr.Row():
                    teach_plane = gr.Plot(label="The score plane (S_D → learned, S_G ↑ kept)", elem_id="teach-plane",
                                          **PLOT)
                    gr.Markdown(teaching.READING_GUIDE, elem_classes=["dba-help"])

            # ---------------------------------------------------------------------------------------- model
            with gr.Tab("1 · Model", id="model"):
                gr.Markdown("Choose the base model and how it is trained. Every job of this session uses this "
                            "choice; **Load** shows its size and memory.")
                with gr.Row():
                    model_name = gr.Dropdown(["default", "tiny"], value=settings.model, allow_custom_value=True,
                                             label="Model", info="default = embedded SmolLM2-135M-Instruct; tiny = "
                                             "a random 2-layer model for tests; or a Hugging Face id / local folder "
                                             "/ .gguf file")
                    model_quant = gr.Radio(["none", "4bit"], value="none", label="Quantisation",
                                           info="4bit = QLoRA (NF4, bitsandbytes); needs LoRA")
                with gr.Row():
                    model_rank = gr.Slider(0, 64, value=p.lora_rank, step=1, label="LoRA rank",
                                           info="0 = full fine-tuning (every weight trains)")
                    model_device = gr.Radio(["auto", "cpu", "cuda"], value=settings.device, label="Device",
                                            info="auto = the GPU when there is one")
                model_btn = gr.Button("Load and inspect", variant="primary")
                model_md = gr.Markdown()

            # ---------------------------------------------------------------------------------------- anchor
            with gr.Tab("2 · Global gradient", id="anchor"):
                gr.Markdown("**Stage 1 of DBA.** Average the gradient of the general loss over a few batches with "
                            "the weights frozen (\"zero-learning-rate training\"). The result ĝ_G is stored as a "
                            "low-rank SVD and reused by every DBA run of this model.")
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        gg_source = gr.Radio(["general", UPLOAD], value="general", label="General corpus",
                                             info="the bundled general set, or your own file")
                        with gr.Accordion("Upload a general corpus", open=False):
                            gg_file = gr.File(label=".jsonl .json .csv .parquet .txt — text, instruction/output, "
                                              "prompt/response or messages rows", height=110,
                                              file_types=list(uploads.CORPUS_EXTENSIONS), type="filepath")
                            gg_check = gr.Markdown()
                        gg_batches = gr.Slider(1, 128, value=p.anchor_batches, step=1, label="Batches",
                                               info="more batches = a steadier average, linear cost")
                        gg_bs = gr.Slider(1, 32, value=p.batch_size, step=1, label="Batch size")
                        gg_energy = gr.Slider(0.5, 1.0, value=0.9, step=0.01, label="Energy kept by the SVD",
                                              info="each matrix keeps the smallest rank with this share of ‖Ĝ‖²")
                        gg_btn = gr.Button("▶ Compute the global gradient", variant="primary")
                        with gr.Accordion("…or load a saved anchor", open=False):
                            gg_load_file = gr.File(label="anchor .safetensors (from this page or `dba anchor`)",
                                                   file_types=[".safetensors"], type="filepath", height=110)
                    with gr.Column(scale=2):
                        gg_md = gr.Markdown("Compute (or load) a global gradient: its size, ranks and spectrum "
                                            "appear here.")
                        gg_plot = gr.Plot(label="Spectrum and energy kept", elem_id="gg-spectrum", **PLOT)
                        gg_download = gr.File(label="Download the anchor", interactive=False, height=80)

            # ---------------------------------------------------------------------------------------- fine-tune
            with gr.Tab("3 · Fine-tune", id="finetune"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        ft_domain = gr.Dropdown(list(BUNDLED_DOMAINS) + [UPLOAD], value="finance",
                                                label="Domain data")
                        with gr.Accordion("Upload domain data", open=False):
                            ft_file = gr.File(label=".jsonl .json .csv .parquet .txt — used when Domain data = "
                                              f"“{UPLOAD}”", file_types=list(uploads.CORPUS_EXTENSIONS),
                                              type="filepath", height=110)
                            ft_check = gr.Markdown()
                        ft_method = gr.Radio(["dba", "direct", "mixture"], value="dba", label="Method",
                                             info="direct = domain only; mixture = domain + general share r")
                        ft_steps = gr.Slider(1, 1000, value=p.steps, step=1, label="Steps T")
                        ft_bs = gr.Slider(1, 64, value=p.batch_size, step=1, label="Batch size")
                        ft_lr = gr.Number(value=p.lr or anneal.lr, label="Peak learning rate η₀",
                                          info="annealed towards 0 over the run (AL)")
                        with gr.Row():
                            ft_eval_every = gr.Number(value=eval_every_for(p), precision=0,
                                                      label="Score every N steps", info="0 = start and end only")
                            ft_eval_items = gr.Number(value=p.eval_items, precision=0, label="Quiz questions",
                                                      info="per eval set; 0 = all")
                        ft_ratio = gr.Slider(0.0, 1.0, value=0.5, step=0.125, label="Mixture: general share r",
                                             info="only for method = mixture")
                        with gr.Accordion("DBA knobs (defaults = the engine's)", open=False):
                            ft_boost_mode = gr.Radio(["convex", "additive", "projection"], value=boost.mode,
                                                     label="Boost (GGB) form",
                                                     info="convex: γĝ+(1−γ)g_D (paper); projection: drop the "
                                                          "conflicting part")
                            with gr.Row():
                                ft_k0 = gr.Number(value=0, label="k₀ (0 = rule min(200/T, cap))")
                                ft_k0_max = gr.Number(value=boost.k0_max or 0, label="cap on k₀ for short runs")
                            ft_decay = gr.Radio(["linear", "constant", "cosine"], value=boost.decay,
                                                label="γ_t decay")
                            ft_scale = gr.Radio(["raw", "relative"], value=boost.scale, label="Anchor scale",
                                                info="relative: rescale ĝ to ‖g_D‖ each step")
                            ft_dc = gr.Radio(["paper", "conservative", "off"], value=corr.function,
                                             label="DC function λ=f(ρ)",
                                             info="paper: step grows on conflict; conservative: shrinks")
                            with gr.Row():
                                ft_beta = gr.Number(value=corr.beta, label="DC strength β")
                                ft_lam_min = gr.Number(value=corr.lam_min, label="λ min")
                                ft_lam_max = gr.Number(value=corr.lam_max, label="λ max")
                            ft_schedule = gr.Radio(["cosine", "linear", "constant"], value=anneal.schedule,
                                                   label="Annealing schedule")
                            ft_ablate = gr.CheckboxGroup(["GGB", "DC", "AL"], value=[], label="Switch off (ablation)")
                            ft_seed = gr.Number(value=0, precision=0, label="Seed")
                        with gr.Row():
                            ft_btn = gr.Button("▶ Start fine-tuning", variant="primary")
                    with gr.Column(scale=2):
                        ft_md = gr.Markdown("The live view of the run appears here once it starts.")
                        ft_scores = gr.Plot(label="S_G and S_D over steps", elem_id="ft-scores", **PLOT)
                        with gr.Row():
                            ft_loss = gr.Plot(label="Training loss", elem_id="ft-loss", **PLOT)
                            ft_dcplot = gr.Plot(label="DC curve with the current ρ", elem_id="ft-dc", **PLOT)
                        ft_rho = gr.Plot(label="ρ_t, λ_t, γ_t and the applied learning rate", elem_id="ft-rho", **PLOT)

            # ---------------------------------------------------------------------------------------- compare
            with gr.Tab("4 · Compare", id="compare"):
                gr.Markdown("**The forgetting experiment**: direct, a mixture sweep, DBA and its ablations on the same "
                            "model, data, seed and budget, sharing one ĝ_G (`dba compare`). Or load a past "
                            "comparison folder.")
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        cmp_domain = gr.Dropdown(list(BUNDLED_DOMAINS), value="finance", label="Domain")
                        cmp_methods = gr.CheckboxGroup(list(METHODS), value=list(METHODS), label="Methods")
                        cmp_ratios = gr.Textbox(", ".join(f"{r:g}" for r in DEFAULT_RATIOS),
                                                label="Mixture ratios (general share per batch)")
                        with gr.Row():
                            cmp_steps = gr.Number(value=p.steps, precision=0, label="Steps")
                            cmp_bs = gr.Number(value=p.batch_size, precision=0, label="Batch size")
                        with gr.Row():
                            cmp_lr = gr.Number(value=p.lr or anneal.lr, label="η₀ (every method)")
                            cmp_eval_items = gr.Number(value=p.eval_items, precision=0, label="Quiz questions")
                        cmp_btn = gr.Button("▶ Run the comparison", variant="primary")
                        gr.Markdown("---")
                        cmp_folder = gr.Dropdown(S.compare_choices(), label="Past comparison folder",
                                                 allow_custom_value=True)
                        with gr.Row():
                            cmp_refresh = gr.Button("↻ Refresh list", size="sm")
                            cmp_load = gr.Button("Load", size="sm", variant="secondary")
                    with gr.Column(scale=2):
                        cmp_md = gr.Markdown()
                        cmp_table = gr.Dataframe(label="results.csv", interactive=False, wrap=True,
                                                 headers=["method", "label", "ratio", "status", "s_d", "s_g", "s",
                                                          "d_s_d", "d_s_g", "d_s", "tokens", "wall_seconds"])
                        cmp_bars = gr.Plot(label="S per method, with cost", elem_id="cmp-bars", **PLOT)
                        with gr.Row():
                            cmp_plane = gr.Plot(label="Trajectories in the (S_D, S_G) plane", elem_id="cmp-plane",
                                                **PLOT)
                        cmp_over = gr.Plot(label="S_G and S_D over steps", elem_id="cmp-over", **PLOT)

            # ---------------------------------------------------------------------------------------- chat
            with gr.Tab("5 · Chat", id="chat"):
                gr.Markdown("Ask the base model and the fine-tuned one the same question (greedy decoding). A LoRA "
                            "run answers twice with one copy of the weights: adapter off, adapter on.")
                with gr.Row():
                    chat_run = gr.Dropdown([], label="Fine-tuned run", allow_custom_value=True, scale=4)
                    chat_refresh = gr.Button("↻ Refresh runs", size="sm", scale=1)
                with gr.Row():
                    chat_prompt = gr.Textbox("What is the capital of Japan?", label="Question", lines=2, scale=4)
                    chat_tokens = gr.Slider(8, 256, value=64, step=8, label="Max new tokens", scale=1)
                chat_btn = gr.Button("Ask both", variant="primary")
                with gr.Row():
                    chat_base = gr.Textbox(label="Base model", lines=6, interactive=False)
                    chat_tuned = gr.Textbox(label="Fine-tuned model", lines=6, interactive=False)

            # ---------------------------------------------------------------------------------------- export
            with gr.Tab("6 · Export", id="export"):
                gr.Markdown("Download a run's result. **Adapter**: the PEFT adapter (load it on the same base with "
                            "`PeftModel.from_pretrained`). **Merged model**: base + adapter merged into one "
                            "standalone checkpoint (not offered for 4-bit runs).")
                with gr.Row():
                    exp_run = gr.Dropdown([], label="Run", allow_custom_value=True, scale=4)
                    exp_refresh = gr.Button("↻ Refresh runs", size="sm", scale=1)
                with gr.Row():
                    exp_adapter_btn = gr.Button("Adapter (.zip)", variant="primary")
                    exp_merged_btn = gr.Button("Merged model (.zip)")
                exp_file = gr.File(label="Download", interactive=False)

        timer = gr.Timer(POLL_SECONDS)

        # ============================================================================================ handlers
        def init_session(stored, request: gr.Request):
            key = settle_key(stored, getattr(request, "session_hash", None))
            ws = workspace(key, settings)
            m = ws.model
            runs = S.run_choices(ws)
            first = runs[0][1] if runs else None
            return (key, key, None, m.name, m.quantization, m.lora_rank, m.device,
                    gr.update(choices=runs, value=first), gr.update(choices=runs, value=first))

        demo.load(init_session, inputs=[browser_key],
                  outputs=[sid, browser_key, seen, model_name, model_quant, model_rank, model_device, chat_run,
                           exp_run], api_name="init_session", api_visibility="undocumented")

        # ---- job bar / polling ------------------------------------------------------------------------------
        teach_outputs = [teach_md, teach_scores, teach_plane, teach_loss, teach_rho, teach_dc]
        ft_outputs = [ft_md, ft_scores, ft_loss, ft_dcplot, ft_rho]
        gg_outputs = [gg_md, gg_plot, gg_download]
        cmp_outputs = [cmp_md, cmp_table, cmp_bars, cmp_plane, cmp_over]
        poll_outputs = [job_html, seen] + teach_outputs + ft_outputs + gg_outputs + cmp_outputs

        def render(job, ws: Workspace, last: dict) -> tuple[dict, dict]:
            """The outputs of the tab that belongs to the job's kind, redrawing only figures whose data moved
            since ``last`` (the signatures this page saw); returns (outputs, new signatures)."""
            out: dict = {}
            runs = views.job_runs(job)
            sig = views.signatures(runs, job)
            moved = {k for k in sig if sig[k] != last.get(k)}
            if job.kind in ("teach", "finetune"):
                figs = views.training_figures(runs, want=moved)
                if job.kind == "teach":
                    out[teach_md] = "\n\n".join(job.notes) or "starting…"
                    targets = dict(loss=teach_loss, rho=teach_rho, dc=teach_dc, scores=teach_scores,
                                   plane=teach_plane)
                    if "plane" in moved:
                        figs["plane"] = views.plane_figure(runs)
                else:
                    out[ft_md] = views.finetune_md(job, runs)
                    targets = dict(loss=ft_loss, rho=ft_rho, dc=ft_dcplot, scores=ft_scores)
                for name, comp in targets.items():
                    if name in figs:
                        out[comp] = figs[name]
            elif job.kind == "anchor":
                res = job.result
                if res.get("summary"):
                    if "final" in moved:
                        out[gg_md] = views.anchor_summary_md(res["summary"], res.get("anchor"))
                        try:
                            out[gg_plot] = views.spectrum_figure(GlobalGradient.load(res["anchor"]))
                        except DBAError as e:
                            out[gg_md] += f"\n\n(spectrum unavailable: {e})"
                        out[gg_download] = res["anchor"]
                else:
                    out[gg_md] = f"**{html.escape(job.title)}** — {job.state}: {html.escape(job.message)}"
            elif job.kind == "compare":
                folder = job.result.get("compare_dir")
                md = f"**{html.escape(job.title)}** — {job.state}: {html.escape(job.message)}"
                if folder and Path(folder, "results.csv").exists() and not job.active:
                    if "final" in moved:
                        table, bars, plane, over, summary = views.compare_outputs(folder)
                        out.update({cmp_table: table, cmp_bars: bars, cmp_plane: plane, cmp_over: over})
                        md = (summary or md) + "".join(f"\n\n⚠ {w}" for w in job.result.get("warnings") or [])
                        out[cmp_md] = md
                else:
                    if "plane" in moved:
                        out[cmp_plane] = views.plane_figure(runs)
                    if "scores" in moved:
                        out[cmp_over] = views.training_figures(runs, want={"scores"})["scores"]
                    out[cmp_md] = md
            return out, sig

        def poll(sid_value, seen_value, request: gr.Request):
            ws = S.ws(sid_value, request)
            job = REGISTRY.current(ws.key)
            out = {job_html: views.job_bar(job)}
            if job is None:
                return out
            seen_value = dict(seen_value or {})
            same = seen_value.get("id") == job.id
            if same and seen_value.get("version") == job.version:
                return out
            now = time.time()
            if same and job.active and now - seen_value.get("t", 0) < REDRAW_SECONDS:
                return out
            try:
                drawn, sig = render(job, ws, seen_value.get("sig", {}) if same else {})
                out.update(drawn)
                seen_value["sig"] = sig
            except Exception as e:  # noqa: BLE001 -- a drawing problem must not stop the polling
                out[job_html] = (views.job_bar(job) +
                                 f'<div class="dba-error">display problem: {html.escape(str(e))}</div>')
            if not job.active and seen_value.get("ended") != job.id:
                # a pop-up only for a page that watched the job run (not on every reload afterwards); the job bar
                # keeps the error in any case
                if same and job.state == "failed" and job.error:
                    gr.Warning(job.error, duration=None)
                elif same and job.state == "completed":
                    gr.Info(f"{job.title}: finished")
                seen_value["ended"] = job.id
            seen_value.update(id=job.id, version=job.version, t=now)
            out[seen] = seen_value
            return out

        timer.tick(poll, inputs=[sid, seen], outputs=poll_outputs, api_name="poll", show_progress="hidden",
                   concurrency_limit=None, api_visibility="undocumented")

        def job_status(sid_value, request: gr.Request):
            job = REGISTRY.current(S.ws(sid_value, request).key)
            return job.snapshot() if job else views.EMPTY_JOB

        refresh_btn.click(job_status, [sid], [job_json], api_name="job_status", concurrency_limit=None)

        def wait_job(sid_value, timeout, request: gr.Request):
            """Block until the session's job ends (or ``timeout`` seconds pass); returns its status."""
            key = S.ws(sid_value, request).key
            REGISTRY.wait(key, float(timeout or 60))
            job = REGISTRY.current(key)
            return job.snapshot() if job else views.EMPTY_JOB

        wait_btn.click(wait_job, [sid, wait_timeout], [job_json], api_name="wait_job", concurrency_limit=None)

        @_guard
        def cancel_job(sid_value, request: gr.Request):
            job = REGISTRY.cancel(S.ws(sid_value, request).key)
            if job is None or not job.cancel.is_set():
                gr.Info("No job is running.")
            return views.job_bar(job)

        cancel_btn.click(cancel_job, [sid], [job_html], api_name="cancel_job", concurrency_limit=None)

        def started(job) -> str:
            gr.Info(f"Started: {job.title}")
            return views.job_bar(job)

        # ---- model --------------------------------------------------------------------------------------------
        def set_model(sid_value, name, quant, rank, device, request: gr.Request):
            ws = S.ws(sid_value, request)
            choice = ModelChoice(name=(name or "default").strip(), quantization=quant or "none",
                                 lora_rank=int(rank or 0), device=device or "auto")
            with ws.lock:
                ws.model = choice
            return choice

        def apply_model(sid_value, name, quant, rank, device, request: gr.Request) -> None:
            set_model(sid_value, name, quant, rank, device, request)

        gr.on([model_name.change, model_quant.change, model_rank.change, model_device.change], apply_model,
              inputs=[sid, model_name, model_quant, model_rank, model_device], outputs=None, api_name="set_model",
              show_progress="hidden")

        @_guard
        def load_and_inspect(sid_value, name, quant, rank, device, request: gr.Request):
            choice = set_model(sid_value, name, quant, rank, device, request)
            lm = tasks.load_choice(choice)
            try:
                return views.model_summary_md(lm.summary())
            finally:
                del lm

        model_btn.click(load_and_inspect, [sid, model_name, model_quant, model_rank, model_device], [model_md],
                        api_name="load_model")

        # ---- global gradient ------------------------------------------------------------------------------------
        @_guard
        def check_general_upload(sid_value, file, request: gr.Request):
            ws = S.ws(sid_value, request)
            src = _file_path(file)
            if not src:
                return "", gr.skip()
            _, info = uploads.accept_corpus(src, ws.uploads, settings.upload_bytes, Path(src).name)
            layouts = ", ".join(f"{k} {v}" for k, v in info["layouts"].items())
            return f"✓ {info['file']}: {info['rows']} rows ({layouts})", UPLOAD

        gg_file.upload(check_general_upload, [sid, gg_file], [gg_check, gg_source], api_name="check_general_upload")

        @_guard
        def start_anchor(sid_value, source, file, batches, batch_size, energy, request: gr.Request):
            ws = S.ws(sid_value, request)
            if source == UPLOAD:
                src = _file_path(file)
                if not src:
                    raise DBAError("Choose a general corpus file to upload first (or use the bundled one).")
                corpus, _ = uploads.accept_corpus(src, ws.uploads, settings.upload_bytes, Path(src).name)
                corpus = str(corpus)
            else:
                corpus = "general"
            ws.model.check()
            form = tasks.AnchorForm(corpus=corpus, batches=int(batches), batch_size=int(batch_size),
                                    energy=float(energy), max_length=p.max_length)
            job = REGISTRY.start(ws.key, "anchor", f"Global gradient of {ws.model.name} ({int(batches)} batches)",
                                 tasks.anchor_job(ws, form))
            return started(job)

        gg_btn.click(start_anchor, [sid, gg_source, gg_file, gg_batches, gg_bs, gg_energy], [job_html],
                     api_name="start_anchor")

        @_guard
        def load_anchor(sid_value, file, request: gr.Request):
            ws = S.ws(sid_value, request)
            src = _file_path(file)
            if not src:
                raise DBAError("Choose a saved anchor (.safetensors) first.")
            stored = uploads.accept_anchor(src, ws.uploads, settings.anchor_bytes, Path(src).name)
            try:
                g = tasks.check_anchor(ws, str(stored))
            except DBAError:
                stored.unlink(missing_ok=True)
                raise
            gr.Info("Anchor loaded: it fits the model; DBA runs of this session will use it.")
            return views.anchor_summary_md(g.summary(), str(stored)), views.spectrum_figure(g)

        gg_load_file.upload(load_anchor, [sid, gg_load_file], [gg_md, gg_plot], api_name="load_anchor")

        # ---- fine-tune -------------------------------------------------------------------------------------------
        @_guard
        def check_domain_upload(sid_value, file, request: gr.Request):
            ws = S.ws(sid_value, request)
            src = _file_path(file)
            if not src:
                return "", gr.skip()
            _, info = uploads.accept_corpus(src, ws.uploads, settings.upload_bytes, Path(src).name)
            layouts = ", ".join(f"{k} {v}" for k, v in info["layouts"].items())
            return f"✓ {info['file']}: {info['rows']} rows ({layouts}); selected as the domain data.", UPLOAD

        ft_file.upload(check_domain_upload, [sid, ft_file], [ft_check, ft_domain], api_name="check_domain_upload")

        @_guard
        def start_finetune(sid_value, domain, file, method, steps, batch_size, lr, eval_every, eval_items, ratio,
                           boost_mode, k0, k0_max, decay, scale, dc, beta, lam_min, lam_max, schedule, ablate, seed,
                           request: gr.Request):
            ws = S.ws(sid_value, request)
            form = tasks.TrainForm(
                domain=S.domain_source(ws, domain, file), method=method, steps=int(steps), batch_size=int(batch_size),
                lr=float(lr), max_length=p.max_length, eval_every=int(eval_every or 0),
                eval_items=_opt_int(eval_items), eval_scorer=p.eval_scorer, mixture_ratio=float(ratio),
                seed=int(seed or 0), anchor_batches=p.anchor_batches, boost_mode=boost_mode, k0=_opt_float(k0),
                k0_max=_opt_float(k0_max), boost_decay=decay, anchor_scale=scale, dc_function=dc,
                dc_beta=float(beta), lam_min=float(lam_min), lam_max=float(lam_max), schedule=schedule,
                ablate=tuple(ablate or ()))
            cfg = tasks.train_config(ws, form, ws.new_run_dir(method))
            anchor_note = ""
            if method == "dba":
                anchor_note = (" with the session's ĝ_G" if cfg.anchor else
                               f" (ĝ_G estimated first: {p.anchor_batches} batches)")
            job = REGISTRY.start(ws.key, "finetune", f"Fine-tune {tasks.run_label(cfg)}{anchor_note} · "
                                 f"{Path(str(form.domain)).stem} · {cfg.steps} steps", tasks.finetune_job(ws, cfg))
            return started(job)

        ft_inputs = [sid, ft_domain, ft_file, ft_method, ft_steps, ft_bs, ft_lr, ft_eval_every, ft_eval_items,
                     ft_ratio, ft_boost_mode, ft_k0, ft_k0_max, ft_decay, ft_scale, ft_dc, ft_beta, ft_lam_min,
                     ft_lam_max, ft_schedule, ft_ablate, ft_seed]
        ft_btn.click(start_finetune, ft_inputs, [job_html], api_name="start_finetune")

        # ---- teaching --------------------------------------------------------------------------------------------
        @_guard
        def start_teaching(sid_value, domain, request: gr.Request):
            ws = S.ws(sid_value, request)
            if domain not in BUNDLED_DOMAINS:
                raise DBAError(f"Choose one of the bundled domains: {', '.join(BUNDLED_DOMAINS)}.")
            ws.model.check()
            job = REGISTRY.start(ws.key, "teach", f"Lesson: direct vs DBA on {domain}", tasks.teach_job(ws, domain))
            return started(job), "\n\n".join(job.notes) or tasks.teach_intro(ws, domain)

        teach_btn.click(start_teaching, [sid, teach_domain], [job_html, teach_md], api_name="start_teaching")

        # ---- compare ---------------------------------------------------------------------------------------------
        @_guard
        def start_compare(sid_value, domain, methods, ratios, steps, batch_size, lr, eval_items,
                          request: gr.Request):
            ws = S.ws(sid_value, request)
            if not methods:
                raise DBAError("Choose at least one method to compare.")
            form = tasks.CompareForm(
                domain=S.domain_source(ws, domain, None), methods=tuple(methods), ratios=_parse_ratios(ratios),
                steps=int(steps), batch_size=int(batch_size), lr=_opt_float(lr), max_length=p.max_length,
                eval_every=p.eval_every, eval_items=_opt_int(eval_items), eval_scorer=p.eval_scorer,
                anchor_batches=p.anchor_batches)
            cfg = tasks.compare_config(ws, form, ws.new_run_dir(f"compare-{domain}"))
            job = REGISTRY.start(ws.key, "compare", f"Compare {len(methods)} methods on {domain}",
                                 tasks.compare_job(ws, cfg))
            return started(job)

        cmp_btn.click(start_compare, [sid, cmp_domain, cmp_methods, cmp_ratios, cmp_steps, cmp_bs, cmp_lr,
                                      cmp_eval_items], [job_html], api_name="start_compare")

        @_guard
        def load_compare(sid_value, folder, request: gr.Request):
            ws = S.ws(sid_value, request)
            path = S.inside(folder or ws.compare_dir, "comparison folder")
            if not views.is_compare_folder(path):
                raise DBAError(f"{path.name} is not a comparison folder (no results.csv or compare.json).")
            table, bars, plane, over, summary = views.compare_outputs(path)
            return summary or f"Loaded `{path}`.", table, bars, plane, over

        cmp_load.click(load_compare, [sid, cmp_folder], cmp_outputs, api_name="load_compare")
        cmp_refresh.click(lambda: gr.update(choices=S.compare_choices()), None, [cmp_folder],
                          api_name="list_compares")

        # ---- chat and export -------------------------------------------------------------------------------------
        def list_runs(sid_value, request: gr.Request):
            runs = S.run_choices(S.ws(sid_value, request))
            first = runs[0][1] if runs else None
            return gr.update(choices=runs, value=first), gr.update(choices=runs, value=first)

        for btn, name in ((chat_refresh, "list_runs"), (exp_refresh, "list_runs_export")):
            btn.click(list_runs, [sid], [chat_run, exp_run], api_name=name)

        @_guard
        def ask_both(sid_value, run, prompt, max_tokens, request: gr.Request):
            ws = S.ws(sid_value, request)
            return exports.chat(S.run_dir_for(ws, run), prompt, int(max_tokens))

        chat_btn.click(ask_both, [sid, chat_run, chat_prompt, chat_tokens], [chat_base, chat_tuned], api_name="chat")
        chat_prompt.submit(ask_both, [sid, chat_run, chat_prompt, chat_tokens], [chat_base, chat_tuned],
                           api_name="chat_submit", api_visibility="undocumented")

        @_guard
        def export_adapter(sid_value, run, request: gr.Request):
            ws = S.ws(sid_value, request)
            return str(exports.export_adapter(S.run_dir_for(ws, run), ws.exports))

        @_guard
        def export_merged(sid_value, run, request: gr.Request):
            ws = S.ws(sid_value, request)
            return str(exports.export_merged(S.run_dir_for(ws, run), ws.exports))

        exp_adapter_btn.click(export_adapter, [sid, exp_run], [exp_file], api_name="export_adapter")
        exp_merged_btn.click(export_merged, [sid, exp_run], [exp_file], api_name="export_merged")

    return demo
