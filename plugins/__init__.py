"""The OpenAI <-> Triton plugins: pure transformations wrapped by two thin plugin classes."""
