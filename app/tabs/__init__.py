"""One module per tab of the page, each with ``build(ctx)`` (its components and events) and, for tabs that show a
job, ``render(ctx, tab, job, ws, runs, moved)`` (what the poll redraws):

- :mod:`.jobbar`   — header, job bar, session load, poll / status / wait / cancel
- :mod:`.lesson`   — "Start here": the narrated direct-vs-DBA lesson
- :mod:`.model`    — model, quantisation, LoRA rank, device; "Load and inspect"
- :mod:`.anchor`   — the global gradient ĝ_G: compute, load, download
- :mod:`.finetune` — one run with every DBA knob, live
- :mod:`.compare`  — the forgetting experiment, live or loaded back
- :mod:`.chat`     — base vs fine-tuned answers
- :mod:`.export`   — adapter / merged model zips

:mod:`.common` holds what they share (:class:`~.common.Ctx`, the error guard, parsers).
"""
