"""What is heard: voices, the speech worker, can-it-be-heard checks, repeats, tones."""
