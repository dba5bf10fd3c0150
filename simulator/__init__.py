"""Virtual kiosks, the city-backend emulator, the broker launcher and load generators."""
