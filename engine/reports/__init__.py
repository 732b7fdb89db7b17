"""Reports an operator or a manager reads without the engine running: Markdown plus PNG
figures in a folder, from the decision log, the outcomes store and order histories."""
