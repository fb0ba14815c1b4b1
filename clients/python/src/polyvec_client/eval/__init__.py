"""Retrieval quality of a polyvec collection: BEIR queries and qrels in, Recall@K / P@K / MRR@10 /
nDCG@10 / MAP / AvgRecall and latency per search kind and hybrid alpha out.

* :mod:`.data`: BEIR files (queries.jsonl, qrels TSV, corpus.jsonl), with errors naming the line;
* :mod:`.metrics`: the measures, computed by ir-measures (trec_eval underneath), never by hand;
* :mod:`.runner`: which searches to run, running them through any search function (the client's over
  HTTP for ``polyvec eval``; the gateway's service for its ``/evaluate`` route, behind the page);
* :mod:`.report`: the terminal table, the JSON and the matplotlib plot.

Needs the ``eval`` extra: ``pip install 'polyvec-client[eval]'`` (ir-measures, matplotlib).
"""
