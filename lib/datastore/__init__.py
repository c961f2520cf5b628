"""The studies folder as the annotators' data: names that cannot escape it, labels checked before they are
stored, and a history in which no save ever destroys a label."""
