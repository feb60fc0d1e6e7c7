"""synthjax: conditional GANs for privacy-preserving medical image sharing."""
