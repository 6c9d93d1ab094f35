package org.tftl.app;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import javax.imageio.ImageIO;
import javax.imageio.ImageReadParam;
import javax.imageio.ImageReader;
import javax.imageio.stream.ImageInputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.tftl.core.ModelFile;
import org.tftl.core.TftlException;
import org.tftl.host.LiteRtHostInterpreter;
import org.tftl.host.Work;

/**
 * The app's flows through its ViewModel on the JVM, with the real model and flowers5 photos:
 * load, rename classes, add photos (gallery picks), train in the background with progress,
 * cancel, restart the app from its storage, continue, export and classify. Only the Activities'
 * view code is left to the phone (see android_demo/README.md).
 */
class ViewModelFlowTest {
  static final List<String> CLASSES = Work.LABELS;

  /** A photo file decoded by the JDK; sampleSize keeps every n-th pixel (the phone scales in the DCT). */
  static final class HostPhoto implements Photo {
    final File file;

    HostPhoto(File file) {
      this.file = file;
    }

    @Override
    public int[] uprightSize() throws IOException {
      try (ImageInputStream in = ImageIO.createImageInputStream(file)) {
        ImageReader r = ImageIO.getImageReaders(in).next();
        r.setInput(in);
        return new int[] {r.getWidth(0), r.getHeight(0)};
      }
    }

    @Override
    public Decoded decode(int sampleSize) throws IOException {
      try (ImageInputStream in = ImageIO.createImageInputStream(file)) {
        ImageReader r = ImageIO.getImageReaders(in).next();
        r.setInput(in);
        ImageReadParam p = r.getDefaultReadParam();
        p.setSourceSubsampling(sampleSize, sampleSize, 0, 0);
        int rawWidth = r.getWidth(0);
        BufferedImage img = r.read(0, p);
        int w = img.getWidth();
        int h = img.getHeight();
        byte[] rgb = new byte[w * h * 3];
        for (int y = 0; y < h; y++) {
          for (int x = 0; x < w; x++) {
            int v = img.getRGB(x, y);
            int o = (y * w + x) * 3;
            rgb[o] = (byte) (v >> 16);
            rgb[o + 1] = (byte) (v >> 8);
            rgb[o + 2] = (byte) v;
          }
        }
        return new Decoded(rgb, w, h, rawWidth, w);
      }
    }
  }

  static PersonalizeViewModel start(File dir) throws IOException {
    return new PersonalizeViewModel(dir, (fb, threads) -> new LiteRtHostInterpreter(Work.LIB, fb, threads), 1);
  }

  static List<File> photos(String cls, int n) {
    File[] files = new File(Work.file("train"), cls).listFiles();
    Arrays.sort(files);
    return Arrays.asList(files).subList(0, n);
  }

  @Test
  void collectTrainCancelRestartContinueExportClassify(@TempDir File storage, @TempDir File shared) throws Exception {
    Work.require();
    PersonalizeViewModel vm = start(storage);
    List<PersonalizeViewModel.State> seen = new CopyOnWriteArrayList<>();
    vm.setObserver(seen::add);
    assertThrows(TftlException.class, () -> vm.addPhoto(0, new HostPhoto(photos("daisy", 1).get(0))));
    vm.loadModel(Files.readAllBytes(Work.file("model.tflite").toPath()), "model.tflite");
    assertEquals(CLASSES, vm.labels());
    vm.renameClass(0, "my daisy");
    assertThrows(TftlException.class, () -> vm.renameClass(1, "my daisy"));
    assertEquals("my daisy", vm.labels().get(0));
    for (int c = 0; c < CLASSES.size(); c++) {
      for (File f : photos(CLASSES.get(c), 8)) {
        vm.addPhoto(c, new HostPhoto(f));
      }
    }
    assertEquals(40, vm.photos());
    assertArrayEquals(new int[] {8, 8, 8, 8, 8}, seen.get(seen.size() - 1).photos);

    vm.startTraining(4, 1e-3).get(5, TimeUnit.MINUTES);
    PersonalizeViewModel.State done = seen.get(seen.size() - 1);
    assertFalse(done.training);
    assertTrue(done.message.startsWith("done"), done.message);
    assertTrue(seen.stream().anyMatch(s -> s.training && s.steps == 5 && s.epoch == 4), "progress reported");
    double firstLoss = seen.stream().filter(s -> s.training && s.epoch == 1 && s.step == 5).findFirst().get().loss;
    assertTrue(done.loss < firstLoss, "loss " + firstLoss + " -> " + done.loss);

    // A second run of 6 epochs, cancelled after its first step: it stops at a step boundary.
    seen.clear();
    vm.setObserver(s -> {
      seen.add(s);
      if (s.training && s.step >= 1) {
        vm.cancelTraining();
      }
    });
    vm.startTraining(6, 1e-3).get(5, TimeUnit.MINUTES);
    assertTrue(seen.get(seen.size() - 1).message.startsWith("cancelled"), seen.get(seen.size() - 1).message);
    File photo = photos("roses", 9).get(8);
    PersonalizeViewModel.Prediction before = vm.classify(new HostPhoto(photo));
    vm.close();

    // The app restarts: storage restores the model, names, photos' features and weights.
    PersonalizeViewModel again = start(storage);
    assertEquals("my daisy", again.labels().get(0));
    assertEquals(40, again.photos());
    PersonalizeViewModel.Prediction after = again.classify(new HostPhoto(photo));
    assertEquals(before.labels, after.labels);
    assertArrayEquals(before.probabilities, after.probabilities);
    assertEquals(3, after.labels.size());
    assertTrue(after.millis > 0);
    List<PersonalizeViewModel.State> resumed = new ArrayList<>();
    again.setObserver(resumed::add);
    again.startTraining(6, 1e-3).get(5, TimeUnit.MINUTES);
    assertTrue(resumed.stream().anyMatch(s -> s.message != null && s.message.startsWith("continuing from epoch 1")));
    assertTrue(resumed.get(resumed.size() - 1).message.startsWith("done"));

    File out = new File(shared, "personalised.tflite");
    again.exportFineTuned(out);
    ModelFile ft = ModelFile.read(out);
    assertTrue(ft.meta.trainedState);
    assertEquals("my daisy", ft.labels.get(0));
    System.out.printf("app flow: top-3 %s %s, %.1f ms%n", after.labels, Arrays.toString(after.probabilities),
        after.millis);
    again.close();
  }
}
