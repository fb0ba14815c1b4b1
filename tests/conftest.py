"""Shared test setup: tests never reach a network, model hubs included."""

from __future__ import annotations

import os

# Libraries must not try the hub: everything a test loads is built locally or shipped in a package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# boto3 must never find real credentials or a real endpoint.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
