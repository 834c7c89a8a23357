"""mlmjax.experiments: side-by-side comparison of masking strategies (`mlmjax-compare`)."""
