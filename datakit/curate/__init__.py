"""Curation: rule filters, the ROUGE-L novelty filter, MinHash/LSH dedup, decontamination."""
