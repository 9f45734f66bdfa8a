"""The digital twin: individual posterior, latent generative model, virtual populations."""
