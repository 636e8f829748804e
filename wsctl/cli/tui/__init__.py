"""The live screen of ``wsctl top`` (Textual, the optional ``wsctl[tui]`` extra)."""
