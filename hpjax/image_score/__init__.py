"""Paper B: image score, sample selection and the semi-supervised loop."""
