"""Data sets and collates: language-model text now; classification, instructions and preferences later."""
