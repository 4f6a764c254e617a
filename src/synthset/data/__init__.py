"""Real datasets: the bundled digits and ImageFolders, split into train / val / test."""
