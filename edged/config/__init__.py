"""Configuration: the settings models and the reference generated from them."""
