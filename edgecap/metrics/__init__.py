"""Caption text as COCO evaluation reads it, and the scores built on it: CIDEr-D (also the run-time
reranker's) and CHAIR (also grounding's object table)."""
