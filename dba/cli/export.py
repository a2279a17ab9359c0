"""``dba export``: a run folder as a shareable PEFT adapter or merged model, with a model card (see dba.export)."""
from __future__ import annotations


def cmd_export(args) -> int:
    from ..export import export_run

    out = export_run(args.run, args.output, merge=args.merge, push_to_hub=args.push_to_hub, private=args.private)
    print(f"exported to {out}")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("export", help="export a run as a shareable adapter or merged model, with a model card",
                       description="Export a run folder: its LoRA adapter (PEFT, loads with PeftModel) or, with "
                                   "--merge, the adapter merged into the base (loads with AutoModelForCausalLM); "
                                   "both with a model card (README.md). Optionally push to the Hugging Face Hub "
                                   "(refused at once when offline).")
    p.add_argument("run", help="a completed run folder (dba train -o ...)")
    p.add_argument("--merge", action="store_true",
                   help="merge the adapter into the base weights (a 4-bit/8-bit base is de-quantised first, so the "
                        "merged model computes what the trained QLoRA model computed)")
    p.add_argument("-o", "--output", default=None, help="export folder (default: RUN/export-adapter or -merged)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the export to this Hub repo id")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.set_defaults(func=cmd_export)
