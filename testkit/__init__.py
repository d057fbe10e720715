"""Support code shared by the tests and the benchmarks, below both: the real BentoML server
launcher (`testkit.launcher`), tiny random captioners (`testkit.tiny_captioners`) and a tiny
synthetic benchmark on disk (`testkit.tiny_data`). Neither tests nor bench import each other for
these."""
