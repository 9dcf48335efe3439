"""`edgecap describe`: alt text for a photo library, locally or on Ray, with sidecars."""
