"""Mini vision-language pre-training of the CLIP towers on a synthetic image-caption corpus.

`corpus` renders and reads the pairs, `captions` writes their captions, `gates` scores towers,
`run` trains them, `cli` is `python -m training.pretrain`.
"""
