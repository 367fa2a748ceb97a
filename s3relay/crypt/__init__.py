"""Encryption at rest: objects under ``[encryption] prefixes`` are stored as
AES-256-GCM segments under a per-object data key that the operator's
key-encryption keys wrap (README, "Encryption at rest").

``layout`` maps plaintext sizes and ranges onto the stored ciphertext,
``keys`` loads key-encryption keys and wraps data keys, ``segments`` seals
and opens the segment stream, ``settings`` parses ``[encryption]``,
``listings`` reports plaintext sizes in listings; ``reader`` (the only
module here that uses Twisted) runs the HEAD that an encrypted GET needs
before its ranged GET, and decrypts the response as it streams.
"""
