"""The self-instruct loop (Wang et al., 2022): demos in, new tasks and their instances out."""
