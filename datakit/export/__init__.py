"""Exports that trainers load as they are: ChatML SFT, DPO pairs (TRL and LLaMA-Factory
styles), axolotl snippets; JSONL or Parquet. See :mod:`datakit.export.core`."""

from datakit.export.core import ExportOptions, ExportResult, export, load_for_export
from datakit.export.formats import render_chatml, user_content

__all__ = ["ExportOptions", "ExportResult", "export", "load_for_export", "render_chatml", "user_content"]
