"""What is really in a photo: detectors, grounding of a caption's claims, reading text."""
