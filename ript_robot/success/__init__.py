"""Success labels: operator labels with integrity (`labels`) and the vision success detector (`detector`)."""
