"""``polyvec reindex-bm25 COLLECTION``: rebuild a collection's BM25 vectors through a running gateway.

It asks the gateway (``POST /v1/collections/{name}/bm25/reindex``) to measure the corpus's mean length
and rewrite every BM25 vector with Qdrant's analyzer: afterwards BM25 scores are exactly Okapi BM25 over
the collection. It also moves a collection created before analyzers existed (``"analyzer": "legacy"``)
onto Qdrant's analyzer, and changes a collection's language, stemmer or stopwords.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyvec reindex-bm25", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("collection", help="the collection to rebuild")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's HTTP address "
                                                                        "(default %(default)s)")
    parser.add_argument("--api-key", help="an API key of the gateway (when it has API_KEYS)")
    parser.add_argument("--avg-len", type=float, help="use this mean length in terms instead of measuring it")
    parser.add_argument("--language", help="the text's language (its stopwords and stemmer)")
    parser.add_argument("--stemmer", help="true, false, or a Snowball language")
    parser.add_argument("--stopwords", help="a language, or a JSON list of words / {languages, words}")
    parser.add_argument("--ascii-folding", choices=["true", "false"], help="fold accents (café = cafe)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for the rebuild (default %(default)s)")
    return parser


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    bm25: dict[str, Any] = {}
    if args.language:
        bm25["language"] = args.language
    if args.stemmer is not None:
        bm25["stemmer"] = {"true": True, "false": False}.get(args.stemmer.lower(), args.stemmer)
    if args.stopwords is not None:
        text = args.stopwords.strip()
        bm25["stopwords"] = json.loads(text) if text[:1] in "[{" else text
    if args.ascii_folding is not None:
        bm25["ascii_folding"] = args.ascii_folding == "true"
    body: dict[str, Any] = {}
    if bm25:
        body["bm25"] = bm25
    if args.avg_len is not None:
        body["avg_len"] = args.avg_len
    return body


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        body = request_body(args)
    except json.JSONDecodeError as exc:
        print(f"polyvec reindex-bm25: --stopwords is not valid JSON: {exc}", file=sys.stderr)
        return 2
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    url = f"{args.url.rstrip('/')}/v1/collections/{args.collection}/bm25/reindex"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"polyvec reindex-bm25: the gateway at {args.url} did not answer: {exc}", file=sys.stderr)
        return 1
    try:
        out = response.json()
    except ValueError:
        out = {"error": response.text}
    if response.status_code != 200:
        print(f"polyvec reindex-bm25: {response.status_code}: {out.get('error', out)}", file=sys.stderr)
        return 1
    settings = out["bm25"]
    print(f"rebuilt the BM25 vectors of {out['objects']} objects of {out['collection']!r} in "
          f"{out['took_ms'] / 1000:.1f} s: analyzer {settings['analyzer']} ({settings.get('language')}), "
          f"avg_len {out['avg_len']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
