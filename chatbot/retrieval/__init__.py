"""Retrieval: text normalisation (``text``), the embedder and its backends (``embed``,
``onnx_encoder``, ``batching``), the versioned FAISS + BM25 index (``index``) and hybrid search
with fusion (``search``)."""
