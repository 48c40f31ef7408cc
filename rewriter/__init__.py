"""rewriter."""
