package org.tftl.app;

import android.app.Notification;
import android.app.NotificationChannel;
import android.app.NotificationManager;
import android.app.PendingIntent;
import android.app.Service;
import android.content.Context;
import android.content.Intent;
import android.content.pm.ServiceInfo;
import android.os.Build;
import android.os.Handler;
import android.os.IBinder;
import android.os.Looper;
import android.os.PowerManager;

/**
 * Training as a foreground service (type dataSync): it outlives the Activity and the screen,
 * holds a partial wake lock while steps run, and shows progress with a Cancel action in its
 * notification. Started with {@link #EXTRA_EPOCHS} for a new run; without it (or when Android
 * restarts the service after killing the process) the view model continues the unfinished run
 * from its last checkpoint, with that run's own epochs, schedule and Adam state.
 */
public final class TrainingService extends Service implements PersonalizeViewModel.Observer {
  static final String ACTION_CANCEL = "org.tftl.app.CANCEL_TRAINING";
  static final String EXTRA_EPOCHS = "epochs";
  static final String EXTRA_LR = "lr";
  static final String CHANNEL = "training";
  static final int NOTIFICATION = 1;
  static final String TRAINING = PersonalizeViewModel.TRAINING;
  private PersonalizeViewModel vm;
  private PowerManager.WakeLock wakeLock;
  private boolean started;
  /** Seen the training task run; the service ends when it no longer does. */
  private volatile boolean running;
  private final Handler main = new Handler(Looper.getMainLooper());

  /** Starts training in the service (a new run of {@code epochs}, or null to continue the saved one). */
  static void start(Context context, Integer epochs, double lr) {
    Intent i = new Intent(context, TrainingService.class).putExtra(EXTRA_LR, lr);
    if (epochs != null) {
      i.putExtra(EXTRA_EPOCHS, epochs.intValue());
    }
    if (Build.VERSION.SDK_INT >= 26) {
      context.startForegroundService(i);
    } else {
      context.startService(i);
    }
  }

  @Override
  public void onCreate() {
    super.onCreate();
    vm = ((TftlApp) getApplication()).viewModel();
    if (Build.VERSION.SDK_INT >= 26) {
      NotificationChannel ch = new NotificationChannel(CHANNEL, getString(R.string.channel_training),
          NotificationManager.IMPORTANCE_LOW);
      getSystemService(NotificationManager.class).createNotificationChannel(ch);
    }
    wakeLock = ((PowerManager) getSystemService(POWER_SERVICE)).newWakeLock(PowerManager.PARTIAL_WAKE_LOCK,
        "tftl:training");
  }

  @Override
  public int onStartCommand(Intent intent, int flags, int startId) {
    Notification n = notification(null);
    if (Build.VERSION.SDK_INT >= 29) {
      startForeground(NOTIFICATION, n, ServiceInfo.FOREGROUND_SERVICE_TYPE_DATA_SYNC);
    } else {
      startForeground(NOTIFICATION, n);
    }
    if (intent != null && ACTION_CANCEL.equals(intent.getAction())) {
      vm.cancel();
      return START_NOT_STICKY;
    }
    if (!started) {
      started = true;
      Integer epochs = intent != null && intent.hasExtra(EXTRA_EPOCHS) ? intent.getIntExtra(EXTRA_EPOCHS, 10) : null;
      double lr = intent != null ? intent.getDoubleExtra(EXTRA_LR, Double.NaN) : Double.NaN;  // NaN: the recipe's
      wakeLock.acquire(6 * 60 * 60 * 1000L);  // dataSync services get at most 6 hours on Android 15
      vm.addObserver(this);  // first: the training task's own start must not be missed
      try {
        vm.startTraining(epochs, lr);
      } catch (RuntimeException e) {  // training already runs: keep following it
        running = true;
      }
    }
    // Killed with the process: Android starts the service again without the epochs, and the
    // view model continues the run from its checkpoint.
    return START_STICKY;
  }

  private Notification notification(PersonalizeViewModel.State s) {
    Notification.Builder b = Build.VERSION.SDK_INT >= 26 ? new Notification.Builder(this, CHANNEL)
        : new Notification.Builder(this);
    Intent cancel = new Intent(this, TrainingService.class).setAction(ACTION_CANCEL);
    PendingIntent pi = PendingIntent.getService(this, 0, cancel, PendingIntent.FLAG_IMMUTABLE);
    Intent open = new Intent(this, MainActivity.class).addFlags(Intent.FLAG_ACTIVITY_SINGLE_TOP);
    b.setSmallIcon(android.R.drawable.stat_sys_upload)
        .setContentTitle(getString(R.string.training_title))
        .setOngoing(true)
        .setOnlyAlertOnce(true)
        .setContentIntent(PendingIntent.getActivity(this, 0, open, PendingIntent.FLAG_IMMUTABLE))
        .addAction(new Notification.Action.Builder(android.R.drawable.ic_menu_close_clear_cancel,
            getString(R.string.cancel), pi).build());
    if (s != null && s.total > 0) {
      b.setProgress(s.total, s.done, false)
          .setContentText(getString(R.string.training_progress, s.epoch, s.epochs, s.step, s.steps, s.loss));
    } else {
      b.setProgress(0, 0, true);
    }
    return b.build();
  }

  /** Called on the view model's worker thread: the notification follows the steps; the service ends with the run. */
  @Override
  public void onState(PersonalizeViewModel.State s) {
    if (TRAINING.equals(s.busy)) {
      running = true;
      if (s.training) {
        ((NotificationManager) getSystemService(NOTIFICATION_SERVICE)).notify(NOTIFICATION, notification(s));
      }
    } else if (running) {
      running = false;
      main.post(new Runnable() {
        @Override
        public void run() {
          finish();
        }
      });
    }
  }

  private void finish() {
    vm.removeObserver(this);
    if (wakeLock.isHeld()) {
      wakeLock.release();
    }
    stopForeground(true);
    stopSelf();
  }

  @Override
  public void onDestroy() {
    vm.removeObserver(this);
    if (wakeLock.isHeld()) {
      wakeLock.release();
    }
    super.onDestroy();
  }

  @Override
  public IBinder onBind(Intent intent) {
    return null;
  }
}
