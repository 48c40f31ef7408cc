"""wedge."""
