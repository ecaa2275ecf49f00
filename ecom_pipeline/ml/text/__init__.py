"""Review intelligence: documents, sentiment labels and models, complaint topics and intents."""
