"""Faces in pictures: detection and alignment (YuNet, Haar), tracking across frames, drawing
results, and the result types with their writers."""
