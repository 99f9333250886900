"""Report text: cleaning and sentence splitting, report sections, tokenisation helpers."""
