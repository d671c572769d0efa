"""Wire forms and stateless rules: codec, envelopes, identities, manifest, certificates, blocks, messages."""
